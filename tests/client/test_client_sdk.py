"""The sync and asyncio SDK against a running gateway process."""

import asyncio
import base64
import io
import json
import socket

import pytest

pytestmark = pytest.mark.timeout(60)
from PIL import Image

from client import AsyncLladaClient, LladaClient, LladaError, is_terminal, state_name
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


def png_bytes(color=(0, 128, 255), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def llada(server):
    with LladaClient(server.address, server.api_key, timeout=10) as client:
        yield client


def test_submit_each_kind_and_read_it_back(llada, tmp_path):
    image_path = tmp_path / "photo.png"
    image_path.write_bytes(png_bytes())
    castle = dict(width=256, height=256, decoder="normal", seed=7, sprint={"enabled": True, "keep_ratio": 0.7})
    t2i = llada.submit_text_to_image("a castle", request_id="sdk-t2i", **castle)
    und = llada.submit_understand(image_path, "What color is it?", gen_length=64)
    edit = llada.submit_edit(png_bytes(), "make it red", cfg_image_scale=1.0, priority=5)
    assert [state_name(j) for j in (t2i, und, edit)] == ["QUEUED"] * 3
    params = dict(t2i.params)
    assert (params["width"], params["decoder"], params["decoder_steps"], params["seed"]) == (256, "normal", 50, 7)
    assert dict(params["sprint"])["keep_ratio"] == 0.7
    assert llada.submit_text_to_image("a castle", request_id="sdk-t2i", **castle).id == t2i.id  # idempotent
    assert llada.get(und.id).kind == pb.JOB_KIND_UNDERSTAND
    listed = [j.id for j in llada.iter_jobs(page_size=2)]
    assert listed[:3] == [edit.id, und.id, t2i.id]
    assert [j.id for j in llada.list(kind="edit").jobs][0] == edit.id


def test_image_submits_carry_their_request_id_priority_and_params(llada):
    und = llada.submit_understand(png_bytes(), "which colour?", request_id="sync-und", priority=4, gen_length=64)
    edit = llada.submit_edit(png_bytes(), "make it red", request_id="sync-edit", priority=6, cfg_image_scale=1.5)
    assert [(j.kind, j.request_id, j.priority) for j in (und, edit)] == [
        (pb.JOB_KIND_UNDERSTAND, "sync-und", 4), (pb.JOB_KIND_EDIT, "sync-edit", 6)]
    assert dict(und.params)["gen_length"] == 64 and dict(edit.params)["cfg_image_scale"] == 1.5
    assert [j.priority for j in (llada.submit_text_to_image("no priority"),
                                 llada.submit_understand(png_bytes(), "what?"),
                                 llada.submit_edit(png_bytes(), "night"))] == [0, 0, 0]
    assert llada.submit_edit(png_bytes(), "make it red", request_id="sync-edit", priority=6,
                             cfg_image_scale=1.5).id == edit.id  # the same request again: the same job


def test_the_broker_message_carries_the_job_id_only(llada, server):
    job = llada.submit_text_to_image("a message on the broker")
    queue_dir = server.settings.data_dir / "broker" / "queue"
    bodies = []
    for path in queue_dir.iterdir():
        message = json.loads(path.read_text())
        bodies.append((message["headers"]["task"], json.loads(base64.b64decode(message["body"]))))
    args_kwargs = [(args, kwargs) for task, (args, kwargs, _embed) in bodies if args == [job.id]]
    assert args_kwargs == [([job.id], {})]
    assert all(task == "llada.run_job" for task, _ in bodies)


def test_bad_input_and_bad_key_raise_lladaerror_with_the_field(llada, server):
    with pytest.raises(LladaError) as err:
        llada.submit_text_to_image("x", width=300)
    assert (err.value.code, err.value.field) == ("INVALID_ARGUMENT", "text_to_image.width")
    with pytest.raises(LladaError) as err:
        llada.submit_understand(b"not an image", "q")
    assert err.value.field == "understand.image"
    with pytest.raises(ValueError, match="decoder"):
        llada.submit_text_to_image("x", decoder="fast")  # refused before sending
    with LladaClient(server.address, "llada_not-a-real-key-000000000", timeout=5) as stranger:
        with pytest.raises(LladaError) as err:
            stranger.list()
    assert err.value.code == "UNAUTHENTICATED"


def test_wait_reports_progress_and_download_saves_the_result(llada, server, tmp_path):
    job = llada.submit_text_to_image("a lake", width=256, height=256)
    result = png_bytes((255, 0, 0))
    seen = []
    driver = server.complete_soon(job.id, image=result)
    final = llada.wait(job.id, progress=seen.append, timeout=30)
    driver.join(5)
    assert state_name(final) == "SUCCEEDED" and is_terminal(final)
    assert "RUNNING" in [state_name(j) for j in seen] and seen[-1].id == final.id
    (path,) = llada.download(final, tmp_path / "out")
    assert path.read_bytes() == result
    (again,) = llada.download(job.id, tmp_path / "lake.png")  # by id, to a file name
    assert again == tmp_path / "lake.png" and again.read_bytes() == result


def test_iter_jobs_goes_through_every_page_with_the_filters(llada, server, monkeypatch):
    kept = [llada.submit_text_to_image(f"page walk {n}") for n in range(3)]
    for job in kept:
        server.complete(job.id, image=png_bytes())
    other_kind = llada.submit_understand(png_bytes(), "what?")
    server.complete(other_kind.id, text="a square")
    still_queued = llada.submit_text_to_image("not finished")
    pages, list_page = [], llada.list

    def listed(**kwargs):
        page = list_page(**kwargs)
        pages.append(len(page.jobs))
        return page
    monkeypatch.setattr(llada, "list", listed)

    walked = [job.id for job in llada.iter_jobs(state="succeeded", kind="text_to_image", page_size=2)]

    assert set(walked) >= {job.id for job in kept}
    assert len(pages) >= 2 and all(size <= 2 for size in pages)  # pages of the size asked for
    assert len(llada.list(state="succeeded", kind="text_to_image").jobs) >= 3  # unasked: the server's page size
    everything = [job.id for job in llada.list(page_size=100).jobs]  # no filter: every state and kind
    assert {kept[0].id, other_kind.id, still_queued.id} <= set(everything)
    assert llada.list(kind="understand", page_size=1).jobs[0].id == other_kind.id  # newer text-to-image after it
    assert other_kind.id not in walked and still_queued.id not in walked
    assert len(walked) == len(set(walked))
    assert all(state_name(llada.get(job_id)) == "SUCCEEDED" for job_id in walked)


def test_cancel_and_delete(llada):
    job = llada.submit_text_to_image("never mind")
    assert state_name(llada.cancel(job.id)) == "CANCELLED"
    llada.delete(job.id)
    with pytest.raises(LladaError) as err:
        llada.get(job.id)
    assert err.value.code == "NOT_FOUND"


def test_async_client_end_to_end(server, tmp_path):
    result = png_bytes((0, 255, 0))

    async def scenario():
        async with AsyncLladaClient(server.address, server.api_key, timeout=10) as llada:
            job = await llada.submit_edit(png_bytes(), "paint it green")
            driver = server.complete_soon(job.id, image=result)
            states = []

            async def progress(snapshot):
                states.append(state_name(snapshot))
            final = await llada.wait(job.id, progress=progress, timeout=30)
            await asyncio.to_thread(driver.join, 5)
            paths = await llada.download(final, tmp_path / "from-job")
            by_id = await llada.download(job.id, tmp_path / "from-id")  # read again, for fresh URLs
            page = await llada.list(state="succeeded")
            other = await llada.submit_understand(png_bytes(), "what?")
            cancelled = await llada.cancel(other.id)
            await llada.delete(other.id)
            with pytest.raises(LladaError):
                await llada.get(other.id)
            return final, states, paths + by_id, page, cancelled

    final, states, paths, page, cancelled = asyncio.run(scenario())
    assert state_name(final) == "SUCCEEDED" and states[-1] == "SUCCEEDED" and "RUNNING" in states
    assert [path.read_bytes() for path in paths] == [result, result]
    assert final.id in [j.id for j in page.jobs]
    assert state_name(cancelled) == "CANCELLED"


def test_server_and_key_default_to_the_environment(server, monkeypatch):
    monkeypatch.setenv("LLADA_SERVER", server.address)
    monkeypatch.setenv("LLADA_API_KEY", server.api_key)
    with LladaClient(timeout=10) as llada:
        assert state_name(llada.submit_text_to_image("from the environment")) == "QUEUED"


def test_an_explicit_empty_api_key_sends_no_key_even_with_one_in_the_environment(server, monkeypatch):
    monkeypatch.setenv("LLADA_API_KEY", server.api_key)
    with LladaClient(server.address, timeout=10) as from_environment:
        from_environment.list()  # None: the environment's key
    with LladaClient(server.address, api_key="", timeout=10) as anonymous:
        with pytest.raises(LladaError) as err:
            anonymous.list()
    assert err.value.code == "UNAUTHENTICATED" and "missing API key" in err.value.message

    async def anonymous_async():
        async with AsyncLladaClient(server.address, api_key="", timeout=10) as client:
            await client.list()
    with pytest.raises(LladaError) as err:
        asyncio.run(anonymous_async())
    assert err.value.code == "UNAUTHENTICATED"


def test_a_reused_request_id_with_another_request_raises_already_exists(llada):
    first = llada.submit_text_to_image("a harbour", request_id="sdk-reused")
    assert llada.submit_text_to_image("a harbour", request_id="sdk-reused").id == first.id
    with pytest.raises(LladaError) as err:
        llada.submit_text_to_image("a different harbour", request_id="sdk-reused")
    assert (err.value.code, err.value.field) == ("ALREADY_EXISTS", "request_id")


def test_the_async_client_submits_each_kind_with_its_request_id_and_priority_and_lists_them(server):
    """The asyncio client's own calls, as test_submit_each_kind_and_read_it_back does for the sync one."""

    async def scenario():
        async with AsyncLladaClient(server.address, server.api_key, timeout=10) as llada:
            assert await llada.serving()
            t2i = await llada.submit_text_to_image("an async castle", request_id="async-t2i", priority=3,
                                                   width=256, height=256, seed=11)
            und = await llada.submit_understand(png_bytes(), "which colour?", request_id="async-und", priority=4,
                                                gen_length=64)
            edit = await llada.submit_edit(png_bytes(), "make it red", request_id="async-edit", priority=5,
                                           cfg_image_scale=1.0)
            defaults = [await llada.submit_text_to_image("no priority"),
                        await llada.submit_understand(png_bytes(), "no priority?"),
                        await llada.submit_edit(png_bytes(), "no priority")]
            again = await llada.submit_text_to_image("an async castle", request_id="async-t2i", priority=3,
                                                     width=256, height=256, seed=11)
            read = await llada.get(und.id)
            cancelled = await llada.cancel(defaults[2].id)
            newest_understand = await llada.list(kind="understand", state="queued", page_size=1)
            newest_text_to_image = await llada.list(kind="text_to_image", state="queued", page_size=1)
            newest_cancelled_edit = await llada.list(kind="edit", state="cancelled", page_size=1)
            everything = await llada.list(page_size=100)
            pages, token = [], ""
            while True:
                page = await llada.list(state="queued", page_size=2, page_token=token)
                pages.append(page.jobs)
                if not page.next_page_token:
                    break
                token = page.next_page_token
            return (t2i, und, edit, defaults, again, read, cancelled, newest_understand, newest_text_to_image,
                    newest_cancelled_edit, everything, pages)

    (t2i, und, edit, defaults, again, read, cancelled, newest_understand, newest_text_to_image, newest_cancelled_edit,
     everything, pages) = asyncio.run(scenario())
    assert [(j.kind, j.request_id, j.priority) for j in (t2i, und, edit)] == [
        (pb.JOB_KIND_TEXT_TO_IMAGE, "async-t2i", 3), (pb.JOB_KIND_UNDERSTAND, "async-und", 4),
        (pb.JOB_KIND_EDIT, "async-edit", 5)]
    assert [job.priority for job in defaults] == [0, 0, 0]
    assert dict(t2i.params)["prompt"] == "an async castle" and dict(t2i.params)["seed"] == 11
    assert dict(und.params)["question"] == "which colour?" and dict(und.params)["gen_length"] == 64
    assert dict(edit.params)["instruction"] == "make it red" and dict(edit.params)["cfg_image_scale"] == 1.0
    assert again.id == t2i.id and read.id == und.id and read.kind == pb.JOB_KIND_UNDERSTAND
    assert state_name(cancelled) == "CANCELLED"
    # Filters by kind and by state: the newest understanding job still queued (an edit and a text-to-image came
    # after it), the newest cancelled edit; no filter lists the cancelled job too.
    assert [j.id for j in newest_understand.jobs] == [defaults[1].id]
    assert [j.id for j in newest_text_to_image.jobs] == [defaults[0].id]  # newer jobs of other kinds are queued
    assert [j.id for j in newest_cancelled_edit.jobs] == [cancelled.id]
    assert cancelled.id in [j.id for j in everything.jobs]
    queued = [job for page in pages for job in page]
    assert all(len(page) <= 2 for page in pages) and len({j.id for j in queued}) == len(queued)
    assert all(j.state == pb.JOB_STATE_QUEUED for j in queued) and cancelled.id not in {j.id for j in queued}
    assert {t2i.id, und.id, edit.id, defaults[0].id, defaults[1].id} <= {j.id for j in queued}


def test_the_async_client_says_a_gateway_that_does_not_answer_is_not_serving():
    """Nothing listening, and a listener that never speaks gRPC: both are "not serving" within the timeout."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()

    async def serving(port):
        async with AsyncLladaClient(f"127.0.0.1:{port}", "llada_unused-key-000000000000000", timeout=2) as llada:
            return await asyncio.wait_for(llada.serving(timeout=0.5), 10)

    try:
        assert asyncio.run(serving(closed_port)) is False
        assert asyncio.run(serving(silent.getsockname()[1])) is False
    finally:
        silent.close()
