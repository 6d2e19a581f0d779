// The job dashboard: the job API as JSON (/v1/jobs), with this tab's API key. No build step, no dependencies.
// Live rows follow /v1/jobs/{id}/events through fetch() (EventSource cannot send an Authorization header).
"use strict";

const KEY_ITEM = "llada-api-key";
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]);
// A browser holds about six connections per host: a few live streams, the rest kept fresh by the list refresh.
const MAX_STREAMS = 4;
const REFRESH_MS = 5000;
const following = new Map();   // job id -> AbortController of its event stream
const thumbnails = new Map();  // job id -> object URL or presigned URL
const STAGE_ORDER = ["tokenize", "think", "denoise", "decode"];
const $ = (id) => document.getElementById(id);

const short = (value, prefix) => (value || `${prefix}UNSPECIFIED`).replace(prefix, "");
const stateOf = (job) => short(job.state, "JOB_STATE_");
const kindOf = (job) => short(job.kind, "JOB_KIND_");

class ApiError extends Error {
  constructor(status, error) {
    super(error.param ? `${error.message} (field: ${error.param})` : error.message);
    this.status = status;
    this.param = error.param;
  }
}

function key() { return sessionStorage.getItem(KEY_ITEM); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.headers || {}) };
  const reply = await fetch(path, { ...options, headers });
  if (!reply.ok) {
    let error = { message: `${reply.status} ${reply.statusText}` };
    try { error = (await reply.json()).error || error; } catch (_) { /* not JSON */ }
    if (reply.status === 401) signOut(error.message);
    throw new ApiError(reply.status, error);
  }
  return reply;
}

// ---------------------------------------------------------------- the key

function signOut(why) {
  sessionStorage.removeItem(KEY_ITEM);
  for (const controller of following.values()) controller.abort();
  following.clear();
  showKeyForm(why);
}

function showKeyForm(why) {
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("key-form").hidden = false;
  $("who").textContent = why || "";
}

function showApp() {
  $("key-form").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = "signed in with a key (this tab only)";
  refresh();
}

// ---------------------------------------------------------------- rendering

function cell(row, name) { return row.querySelector(`td.${name}`); }

function rowFor(job) {
  let row = document.querySelector(`tr[data-job-id="${job.id}"]`);
  if (row) return row;
  row = document.createElement("tr");
  row.dataset.jobId = job.id;
  for (const name of ["created", "kind", "state", "progress", "stages", "result", "actions"]) {
    const td = document.createElement("td");
    td.className = name;
    row.appendChild(td);
  }
  const cancel = document.createElement("button");
  cancel.textContent = "Cancel";
  cancel.className = "cancel";
  cancel.onclick = () => act(job.id, "POST", `/v1/jobs/${job.id}:cancel`);
  const remove = document.createElement("button");
  remove.textContent = "Delete";
  remove.className = "delete";
  remove.onclick = () => act(job.id, "DELETE", `/v1/jobs/${job.id}`);
  cell(row, "actions").append(cancel, remove);
  cell(row, "progress").appendChild(document.createElement("progress"));
  cell(row, "progress").appendChild(document.createElement("span"));
  return row;
}

function render(job) {
  const row = rowFor(job);
  const state = stateOf(job);
  row.dataset.state = state;
  cell(row, "created").textContent = job.createdAt ? new Date(job.createdAt).toLocaleTimeString() : "";
  cell(row, "kind").textContent = kindOf(job).toLowerCase().replaceAll("_", " ");
  let stateText = state;
  if (state === "QUEUED" && job.queuePosition) stateText += ` (#${job.queuePosition} in queue)`;
  if (state === "FAILED" && job.error) {
    stateText += `: ${job.error.message || job.error.code}` + (job.error.field ? ` (field: ${job.error.field})` : "");
  }
  cell(row, "state").textContent = stateText;
  const bar = cell(row, "progress").querySelector("progress");
  const step = job.progress?.step || 0, total = job.progress?.total || 0;
  bar.max = 1;
  bar.value = state === "SUCCEEDED" ? 1 : total ? step / total : 0;
  cell(row, "progress").querySelector("span").textContent =
    state === "RUNNING" && job.stage ? ` ${short(job.stage, "STAGE_").toLowerCase()} ${step}/${total}` : "";
  const rank = (stage) => (STAGE_ORDER.indexOf(stage) + STAGE_ORDER.length + 1) % (STAGE_ORDER.length + 1);
  cell(row, "stages").textContent = Object.entries(job.stageSeconds || {})
    .sort(([a], [b]) => rank(a) - rank(b))
    .map(([stage, seconds]) => `${stage} ${seconds.toFixed(2)}`).join(", ");
  row.querySelector("button.cancel").disabled = TERMINAL.has(state);
  row.querySelector("button.delete").disabled = !TERMINAL.has(state);
  if (kindOf(job) === "UNDERSTAND") showAnswer(job, cell(row, "result"));
  else if (state === "SUCCEEDED") showImage(job, cell(row, "result"));
  return row;
}

function showAnswer(job, td) {
  // While it runs, the answer grows as its blocks settle; then it is the whole answer.
  let answer = td.querySelector(".answer");
  if (!answer) {
    answer = document.createElement("div");
    answer.className = "answer";
    td.appendChild(answer);
  }
  answer.textContent = job.outputs?.text || "";
}

async function showImage(job, td) {
  if (td.dataset.filled) return;
  td.dataset.filled = "1";
  const image = (job.outputs?.objects || []).find((o) => o.name === "image");
  if (!image) return;
  let src = thumbnails.get(job.id);
  if (!src) {
    // A presigned http(s) URL loads as is; the embedded stack's file:// objects come through /output.
    src = /^https?:/.test(image.url) ? image.url
      : URL.createObjectURL(await (await api(`/v1/jobs/${job.id}/output`)).blob());
    thumbnails.set(job.id, src);
  }
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = `result of job ${job.id}`;
  img.src = src;
  td.appendChild(img);
}

// ---------------------------------------------------------------- live updates

async function follow(jobId) {
  if (following.has(jobId) || following.size >= MAX_STREAMS) return;
  const controller = new AbortController();
  following.set(jobId, controller);
  let lastId = null, terminal = false;
  try {
    while (!terminal && !controller.signal.aborted) {
      const headers = lastId ? { "Last-Event-ID": lastId } : {};
      const reply = await api(`/v1/jobs/${jobId}/events`, { headers, signal: controller.signal });
      for await (const event of sseEvents(reply.body)) {
        if (event.id) lastId = event.id;
        if (event.event === "job") {
          const job = JSON.parse(event.data);
          render(job);
          terminal = TERMINAL.has(stateOf(job));
        } else if (event.event === "error") {
          terminal = true;  // the job is gone or the service gave up: the next list refresh tells
        }
      }
      if (!terminal) await new Promise((resolve) => setTimeout(resolve, 1000));  // broken stream: resume
    }
  } catch (_) {
    // aborted, or the job went away: the list refresh shows what is left
  } finally {
    following.delete(jobId);
  }
}

// Server-sent events from a fetch() body: blank-line separated blocks of "field: value" lines.
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", data: [], id: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(text);
        else if (field === "event") event.event = text;
        else if (field === "id") event.id = text;
      }
      if (event.data.length) yield { ...event, data: event.data.join("\n") };
    }
  }
}

// ---------------------------------------------------------------- actions

async function refresh() {
  try {
    const page = await (await api("/v1/jobs?page_size=50")).json();
    const jobs = page.jobs || [];
    const rows = jobs.map(render);
    $("job-rows").replaceChildren(...rows);  // newest first, as listed
    for (const job of jobs) if (!TERMINAL.has(stateOf(job))) follow(job.id);
    $("list-error").textContent = "";
  } catch (err) {
    $("list-error").textContent = err.message;
  }
}

async function act(jobId, method, path) {
  try {
    await api(path, { method });
    if (method === "DELETE") {
      document.querySelector(`tr[data-job-id="${jobId}"]`)?.remove();
      following.get(jobId)?.abort();
    }
    await refresh();
  } catch (err) {
    $("list-error").textContent = err.message;
  }
}

function fileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function submitJob(event) {
  event.preventDefault();
  $("submit-error").textContent = "";
  const kind = $("kind").value;
  const text = $("text").value;
  let params;
  try {
    if (kind === "textToImage") {
      const [width, height] = $("size").value.split("x").map(Number);
      params = { prompt: text, width, height };
    } else {
      const file = $("image").files[0];
      if (!file) throw new Error("choose an image (field: image)");
      const image = await fileAsBase64(file);
      params = kind === "understand" ? { image, question: text } : { image, instruction: text };
    }
    const reply = await api("/v1/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ [kind]: params }),
    });
    const job = await reply.json();
    $("job-rows").prepend(render(job));
    follow(job.id);
    $("text").value = "";
  } catch (err) {
    $("submit-error").textContent = err.message;
  }
}

function kindChanged() {
  const kind = $("kind").value;
  $("text-name").textContent = { textToImage: "Prompt", understand: "Question", edit: "Instruction" }[kind];
  $("size-label").hidden = kind !== "textToImage";
  $("image-label").hidden = kind === "textToImage";
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_ITEM, $("api-key").value.trim());
    $("api-key").value = "";
    showApp();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("job-form").addEventListener("submit", submitJob);
  $("kind").addEventListener("change", kindChanged);
  $("refresh").addEventListener("click", refresh);
  kindChanged();
  if (key()) showApp(); else showKeyForm();
  setInterval(() => { if (key()) refresh(); }, REFRESH_MS);
});
