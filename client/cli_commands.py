"""Argument parsing and the handlers behind each ``llada`` subcommand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToJson

from client.jobs import is_terminal, kind_name, stage_name, state_name
from client.sync_client import LladaClient
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

EXIT_OK, EXIT_FAILED = 0, 1


# --- output ------------------------------------------------------------------------------------
def seed_line(job: pb.Job) -> str | None:
    """``seed: N`` for an image job that recorded the seed it ran with (resubmit with it to reproduce the
    image); None otherwise. `outputs.seed` is a proto3 optional: unset is not seed 0."""
    return f"seed: {job.outputs.seed}" if job.outputs.HasField("seed") else None


def summary(job: pb.Job) -> str:
    parts = [job.id, kind_name(job), state_name(job)]
    if job.state == pb.JOB_STATE_QUEUED and job.queue_position:
        parts.append(f"queue#{job.queue_position}")
    if job.stage:
        parts.append(f"{stage_name(job)} {job.progress.step}/{job.progress.total}")
    if seed_line(job):
        parts.append(seed_line(job))
    if job.error.code:
        field = f" [{job.error.field}]" if job.error.field else ""
        parts.append(f"{job.error.code}: {job.error.message}{field}")
    return "  ".join(parts)


def delivery_lines(job: pb.Job) -> list[str]:
    """One line per webhook delivery GetJob shows: its event, state, tries, last status and error."""
    lines = []
    for d in job.webhook_deliveries:
        event = pb.WebhookEvent.Name(d.event).removeprefix("WEBHOOK_EVENT_").lower()
        state = pb.WebhookDeliveryState.Name(d.state).removeprefix("WEBHOOK_DELIVERY_STATE_").lower()
        line = f"  webhook {event:<9} {state:<9} {d.id}  tries={d.tries}"
        line += f"  HTTP {d.status_code}" if d.status_code else ""
        lines.append(line + (f"  {d.error}" if d.error else ""))
    return lines


class ProgressLine:
    """One self-overwriting status line on stderr while a job runs (a plain line when not a terminal)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, job: pb.Job) -> None:
        total = job.progress.total
        bar = ""
        if total:
            done = int(20 * job.progress.step / total)
            bar = f" [{'#' * done}{'.' * (20 - done)}] {job.progress.step}/{total}"
        line = f"{state_name(job):<10} {stage_name(job):<8}{bar}"
        if job.state == pb.JOB_STATE_QUEUED and job.queue_position:
            line += f" (position {job.queue_position})"
        self.stream.write(("\r" + line.ljust(70)) if self.tty else line + "\n")
        if self.tty and is_terminal(job):
            self.stream.write("\n")
        self.stream.flush()


def finish(client: LladaClient, job: pb.Job, output: str | None) -> int:
    """Reports a terminal job: text to stdout, images to ``output``; non-zero unless it succeeded."""
    if job.state != pb.JOB_STATE_SUCCEEDED:
        print(f"error: job {job.id} {state_name(job)}" + (f": {job.error.code}: {job.error.message}"
              if job.error.code else "") + (f" (field: {job.error.field})" if job.error.field else ""),
              file=sys.stderr)
        return EXIT_FAILED
    if job.outputs.thinking_text:
        print(f"[thinking]\n{job.outputs.thinking_text}\n[/thinking]")
    if job.outputs.text:
        print(job.outputs.text)
    if seed_line(job):
        # On stderr with the progress line: stdout keeps only the results (text, image paths) for scripts.
        print(seed_line(job), file=sys.stderr)
    if job.outputs.objects:
        if output:
            for path in client.download(job, output):
                print(path)
        else:
            for obj in job.outputs.objects:
                print(obj.url or obj.object_key)
    return EXIT_OK


# --- handlers --------------------------------------------------------------------------------------
def _client(args) -> LladaClient:
    # Already resolved against the environment (cli.main): None here means "no key", so pass "".
    return LladaClient(args.server, args.api_key or "", tls=args.tls, root_certificates=args.ca_cert,
                       timeout=args.timeout)


SPRINT_FLAGS = ("keep_ratio", "cache_warmup_steps", "confidence_alpha", "image_keep_ratio", "text_keep_ratio",
                "remasking")


def _sprint(args) -> dict | None:
    values = {name: getattr(args, name) for name in SPRINT_FLAGS}
    values["threshold"] = args.sprint_threshold
    values["enabled"] = True if args.sprint else None
    return values if any(v is not None for v in values.values()) else None


def _params(args, names: tuple[str, ...]) -> dict:
    return {name: getattr(args, name) for name in names}


T2I_FLAGS = ("width", "height", "steps", "cfg_scale", "block_length", "seed", "mode", "thinking_steps",
             "thinking_gen_length", "decoder", "decoder_steps", "resolution_multiplier")
UNDERSTAND_FLAGS = ("gen_length", "steps", "block_length", "threshold")
EDIT_FLAGS = ("steps", "block_length", "cfg_text_scale", "cfg_image_scale", "decoder", "decoder_steps",
              "resolution_multiplier", "seed")


def _webhook(args) -> dict | None:
    if args.webhook is None:
        if args.webhook_event:
            raise ValueError("--webhook-event needs --webhook URL")
        return None
    return {"url": args.webhook, "events": args.webhook_event or []}


def cmd_submit(args) -> int:
    with _client(args) as client:
        common = {"request_id": args.request_id, "priority": args.priority, "webhook": _webhook(args)}
        if args.kind == "t2i":
            job = client.submit_text_to_image(args.prompt, sprint=_sprint(args), **_params(args, T2I_FLAGS),
                                              **common)
        elif args.kind == "understand":
            job = client.submit_understand(args.image, args.question, sprint=_sprint(args),
                                           **_params(args, UNDERSTAND_FLAGS), **common)
        else:
            job = client.submit_edit(args.image, args.instruction, **_params(args, EDIT_FLAGS), **common)
        if not args.wait:
            print(job.id)
            return EXIT_OK
        print(job.id, file=sys.stderr)
        final = client.wait(job.id, progress=ProgressLine())
        return finish(client, final, args.output)


def cmd_get(args) -> int:
    with _client(args) as client:
        job = client.get(args.job_id)
    trace = [f"trace {job.trace_id} (quote it in a support request)"] if job.trace_id else []
    print(MessageToJson(job, preserving_proto_field_name=True) if args.json
          else "\n".join([summary(job), *delivery_lines(job), *trace]))
    return EXIT_OK


def cmd_list(args) -> int:
    with _client(args) as client:
        if args.all:
            jobs, token = list(client.iter_jobs(state=args.state, kind=args.kind, page_size=args.page_size)), ""
        else:
            jobs, token = client.list(state=args.state, kind=args.kind, page_size=args.page_size,
                                      page_token=args.page_token)
    for job in jobs:
        print(summary(job))
    if token:
        print(f"next page: --page-token {token}", file=sys.stderr)
    return EXIT_OK


def cmd_watch(args) -> int:
    with _client(args) as client:
        last = None
        for job in client.watch(args.job_id):
            print(summary(job), flush=True)
            last = job
    return EXIT_OK if last is not None and last.state == pb.JOB_STATE_SUCCEEDED else EXIT_FAILED


def cmd_cancel(args) -> int:
    with _client(args) as client:
        print(summary(client.cancel(args.job_id)))
    return EXIT_OK


def cmd_delete(args) -> int:
    with _client(args) as client:
        client.delete(args.job_id)
    print(f"deleted {args.job_id}")
    return EXIT_OK


def cmd_fetch(args) -> int:
    with _client(args) as client:
        job = client.get(args.job_id)
        if not is_terminal(job):
            print(f"error: job {job.id} is {state_name(job)}, not finished yet", file=sys.stderr)
            return EXIT_FAILED
        return finish(client, job, args.output or ".")


# --- parser ----------------------------------------------------------------------------------------
def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # Accepted before and after the subcommand; SUPPRESS keeps a later default from hiding an earlier value.
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--server", default=default(None), help="gateway host:port (env LLADA_SERVER)")
    parser.add_argument("--api-key", default=default(None), help="API key (env LLADA_API_KEY; \"\" for none)")
    parser.add_argument("--tls", action="store_true", default=default(False), help="connect with TLS")
    parser.add_argument("--ca-cert", default=default(None), help="PEM file of the CA to trust (implies TLS)")
    parser.add_argument("--timeout", type=float, default=default(30.0), help="per-call deadline in seconds")


def _sprint_options(parser) -> None:
    group = parser.add_argument_group("SPRINT (docs/model.md §3.6)")
    group.add_argument("--sprint", action="store_true", help="enable SPRINT")
    group.add_argument("--keep-ratio", type=float)
    group.add_argument("--cache-warmup-steps", type=int)
    group.add_argument("--confidence-alpha", type=float)
    group.add_argument("--image-keep-ratio", type=float)
    group.add_argument("--text-keep-ratio", type=float)
    group.add_argument("--sprint-threshold", type=float)
    group.add_argument("--remasking", choices=["low_confidence", "top_k_margin", "neg_entropy"])


def _decoder_options(parser) -> None:
    parser.add_argument("--decoder", choices=["turbo", "normal"])
    parser.add_argument("--decoder-steps", type=int)
    parser.add_argument("--resolution-multiplier", type=int)


def _submit_options(parser) -> None:
    parser.add_argument("--request-id", help="idempotency key: resubmitting the same request with it returns "
                        "the same job; a different request with it is refused (ALREADY_EXISTS)")
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--webhook", metavar="URL", help="call this URL (https) as the job moves, signed with your "
                        "tenant's webhook secret; the SDK's verify_webhook checks a request")
    parser.add_argument("--webhook-event", action="append", choices=("started", "progress", "completed"),
                        help="an event to be called for (repeat it); default: completed only")
    parser.add_argument("--wait", action="store_true", help="follow the job with a progress line until it ends")
    parser.add_argument("-o", "--output", help="with --wait: save output images here (file or folder)")
    parser.set_defaults(handler=cmd_submit)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)
    parser = argparse.ArgumentParser(prog="llada", description="Submit and manage LLaDA2.0-Uni jobs.",
                                     epilog="Running the service (the embedded stack, its processes, keys, the "
                                            "model in-process) is llada-server's: llada-server --help.")
    _connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit a job").add_subparsers(dest="kind", metavar="KIND",
                                                                               required=True)
    t2i = submit.add_parser("t2i", parents=[common], help="text to image")
    t2i.add_argument("prompt")
    t2i.add_argument("--width", type=int)
    t2i.add_argument("--height", type=int)
    t2i.add_argument("--steps", type=int)
    t2i.add_argument("--cfg-scale", type=float)
    t2i.add_argument("--block-length", type=int)
    t2i.add_argument("--seed", type=int)
    t2i.add_argument("--mode", choices=["normal", "thinking"])
    t2i.add_argument("--thinking-steps", type=int)
    t2i.add_argument("--thinking-gen-length", type=int)
    _decoder_options(t2i)
    _sprint_options(t2i)
    _submit_options(t2i)

    und = submit.add_parser("understand", parents=[common], help="answer a question about an image")
    und.add_argument("image", help="image file (PNG, JPEG or WebP)")
    und.add_argument("question")
    und.add_argument("--gen-length", type=int)
    und.add_argument("--steps", type=int)
    und.add_argument("--block-length", type=int)
    und.add_argument("--threshold", type=float)
    _sprint_options(und)
    _submit_options(und)

    edit = submit.add_parser("edit", parents=[common], help="edit an image by instruction")
    edit.add_argument("image", help="image file (PNG, JPEG or WebP)")
    edit.add_argument("instruction")
    edit.add_argument("--steps", type=int)
    edit.add_argument("--block-length", type=int)
    edit.add_argument("--cfg-text-scale", type=float)
    edit.add_argument("--cfg-image-scale", type=float)
    edit.add_argument("--seed", type=int)
    _decoder_options(edit)
    _submit_options(edit)

    get = commands.add_parser("get", parents=[common], help="show a job")
    get.add_argument("job_id")
    get.add_argument("--json", action="store_true", help="the whole Job message as JSON")
    get.set_defaults(handler=cmd_get)

    lst = commands.add_parser("list", parents=[common], help="list your jobs, newest first")
    lst.add_argument("--state", help="queued, running, succeeded, ...")
    lst.add_argument("--kind", help="t2i, understand or edit")
    lst.add_argument("--page-size", type=int, default=0)
    lst.add_argument("--page-token", default="")
    lst.add_argument("--all", action="store_true", help="follow every page")
    lst.set_defaults(handler=cmd_list)

    for name, handler, text in (("watch", cmd_watch, "stream a job's snapshots until it ends"),
                                ("cancel", cmd_cancel, "cancel a job"),
                                ("delete", cmd_delete, "delete a job and its stored objects")):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("job_id")
        sub.set_defaults(handler=handler)

    fetch = commands.add_parser("fetch", parents=[common], help="download a finished job's outputs")
    fetch.add_argument("job_id")
    fetch.add_argument("-o", "--output", help="file or folder (default: the current folder)")
    fetch.set_defaults(handler=cmd_fetch)
    return parser
