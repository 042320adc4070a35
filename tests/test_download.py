"""The download stage against a real loopback HTTP server that misbehaves on demand.

No mocking: every HTTP test goes through requests, a socket and tests/http_server.py. Each fault
checks the outcome (the right bytes, or the right PipelineError) and that the final file is either
exactly the payload or the previous good file, byte for byte.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.config import OFFICIAL_BLOB_ID, OFFICIAL_SOURCE, Config, load_config
from pipeline.download import _verify, download, local_source, partial_path
from pipeline.errors import PipelineError
from pipeline.files import git_blob_id
from pipeline.stages import get_stage, run_stage
from tests.conftest import SAMPLE
from tests.http_server import HTML_PAGE, Fault, FaultyServer, unused_port

# Bytes sent before a connection is cut or stalls: the file takes five cuts to arrive.
CUT = SAMPLE.stat().st_size * 2 // 9
TIMEOUT = 0.5  # seconds, connect and read, for the tests that stall the server
STALL = 2.0  # seconds the server stalls: longer than TIMEOUT


@pytest.fixture(scope="module")
def payload() -> bytes:
    return SAMPLE.read_bytes()


@pytest.fixture(scope="module")
def previous(payload) -> bytes:
    """A 'previous good' raw file: real review lines, but not the payload."""
    return b"".join(payload.splitlines(keepends=True)[:300])


@pytest.fixture
def server(payload):
    with FaultyServer(payload) as srv:
        yield srv


def make_config(tmp_path: Path, source: str, **changes) -> Config:
    settings = dict(download_retries=2, download_backoff=0.01, download_timeout=5.0)
    return load_config(
        data_dir=tmp_path / "data",
        artifacts_dir=tmp_path / "artifacts",
        source=source,
        **{**settings, **changes},
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_previous(config: Config, data: bytes) -> None:
    config.raw_path.parent.mkdir(parents=True, exist_ok=True)
    config.raw_path.write_bytes(data)


# -- one parametrized test per fault ---------------------------------------------------------------
# fault, expected error (a regex; None: success), Range headers the client must have sent, in order
# (None where no Range), and the statuses the server must have answered.
FAULTS = {
    "normal": (Fault(), None, [None], [200]),
    "cut once, Range honoured: resumes": (
        Fault(cut_after=CUT, cut_times=1),
        None,
        [None, f"bytes={CUT}-"],
        [200, 206],
    ),
    "cut once, Range ignored: starts over": (
        Fault(cut_after=CUT, cut_times=1, range_mode="ignore"),
        None,
        [None, f"bytes={CUT}-"],
        [200, 200],
    ),
    "cut once, 206 from the wrong byte: starts over": (
        Fault(cut_after=CUT, cut_times=1, range_mode="wrong"),
        None,
        [None, f"bytes={CUT}-", None],
        [200, 206, 200],
    ),
    "cut every time, 206 from the wrong byte: restarts until out of retries": (
        Fault(cut_after=CUT, range_mode="wrong"),
        rf"^cannot download from 127\.0\.0\.1:\d+ after 7 attempts \(connection dropped after "
        rf"{CUT} of {{size}} bytes\); ",
        [None, f"bytes={CUT}-"] * 3 + [None],
        [200, 206] * 3 + [200],
    ),
    "cut every time, Range honoured: progress each time, so it completes": (
        Fault(cut_after=CUT),
        None,
        [None, f"bytes={CUT}-", f"bytes={2 * CUT}-", f"bytes={3 * CUT}-", f"bytes={4 * CUT}-"],
        [200, 206, 206, 206, 206],
    ),
    # The first attempt made progress (0 -> CUT bytes), so 3 more without any are allowed.
    "cut every time, Range ignored: no progress, gives up": (
        Fault(cut_after=CUT, range_mode="ignore"),
        rf"^cannot download from 127\.0\.0\.1:\d+ after 4 attempts \(connection dropped after "
        rf"{CUT} of {{size}} bytes\); download naver_shopping\.txt elsewhere and pass "
        r"--source PATH$",
        [None] + [f"bytes={CUT}-"] * 3,
        [200] * 4,
    ),
    "500 twice then 200: retried": (Fault(fail_first=2), None, [None] * 3, [500, 500, 200]),
    "500 and cuts in turn: each bit of progress restores the retries": (
        Fault(fail_every=2, cut_after=CUT),
        None,
        [None, None] + [f"bytes={n * CUT}-" for n in (1, 1, 2, 2, 3, 3, 4, 4)],
        [500, 200] + [500, 206] * 4,
    ),
    "500 always: gives up after the retries": (
        Fault(fail_first=10**6),
        r"^cannot download from 127\.0\.0\.1:\d+ after 3 attempts \(server error HTTP 500 "
        r"Internal Server Error\); .*pass --source PATH$",
        [None] * 3,
        [500] * 3,
    ),
    "404: not retried": (
        Fault(status=404),
        r"answered HTTP 404 \(Not Found\); check the --source URL$",
        [None],
        [404],
    ),
    "403: not retried": (
        Fault(status=403),
        r"answered HTTP 403 \(Forbidden\); check the --source URL$",
        [None],
        [403],
    ),
    "corrupt bytes: checksum mismatch": (
        Fault(corrupt=True),
        r"^checksum mismatch for http://\S+: expected sha256 {good}, got {bad}; ",
        [None],
        [200],
    ),
    "html page": (
        Fault(html=True),
        r"returned a web page \(text/html; charset=utf-8\), not the review file; check the "
        r"--source URL",
        [None],
        [200],
    ),
    "html page sent as text/plain": (
        Fault(body=HTML_PAGE),
        r"holds a web page, not the review file",
        [None],
        [200],
    ),
    "error message instead of data": (
        Fault(body=b"Rate limit exceeded, try again later.\n"),
        r"does not look like the review file \(no RATING<TAB>REVIEW line at its start; it "
        r"begins 'Rate limit exceeded",
        [None],
        [200],
    ),
    "empty body": (Fault(body=b""), r"is empty; check the --source URL", [None], [200]),
    "slow every time: read timeout, gives up": (
        Fault(delay=STALL),
        r"^cannot download from 127\.0\.0\.1:\d+ after 3 attempts \(no data for 0\.5 s\); .*"
        r"pass --source PATH$",
        [None] * 3,
        [None] * 3,
    ),
    "slow once: retried": (Fault(delay=STALL, delay_times=1), None, [None] * 2, [None, 200]),
    "stalls mid-body once: resumes": (
        Fault(delay=STALL, delay_after=CUT, delay_times=1),
        None,
        [None, f"bytes={CUT}-"],
        [200, 206],
    ),
}


@pytest.mark.parametrize("had_previous", [True, False], ids=["previous file", "no previous file"])
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault(tmp_path, payload, previous, server, name, had_previous):
    fault, error, ranges, statuses = FAULTS[name]
    server.fault = fault
    slow = fault.delay > 0
    config = make_config(
        tmp_path, server.url, sha256=sha256(payload), download_timeout=TIMEOUT if slow else 5.0
    )
    if had_previous:
        put_previous(config, previous)

    if error is None:
        result = download(config, quiet=True)
        assert config.raw_path.read_bytes() == payload
        assert result["bytes"] == len(payload) and result["sha256"] == sha256(payload)
        # nothing left behind beside the final file
        assert sorted(p.name for p in config.raw_path.parent.iterdir()) == [config.raw_path.name]
    else:
        pattern = error.format(size=len(payload), good=sha256(payload), bad=sha256(server._body()))
        with pytest.raises(PipelineError) as info:
            download(config, quiet=True)
        assert re.search(pattern, str(info.value)), str(info.value)
        if had_previous:
            assert config.raw_path.read_bytes() == previous
        else:
            assert not config.raw_path.exists()
    assert server.ranges() == ranges
    assert [r.status for r in server.requests] == statuses
    assert {r.path for r in server.requests} == {"/sentiment/naver_shopping.txt"}
    # identity: Range offsets and Content-Length count the file's bytes, not gzip's
    assert {r.accept_encoding for r in server.requests} <= {"identity"}


# -- resuming across runs --------------------------------------------------------------------------
def test_partial_file_from_a_failed_run_is_resumed_by_the_next(tmp_path, payload, previous, server):
    config = make_config(tmp_path, server.url, download_retries=0)
    put_previous(config, previous)
    server.fault = Fault(cut_after=CUT, range_mode="ignore")
    # retries=0: the first attempt made progress, the second (Range ignored, cut again) did not
    with pytest.raises(PipelineError, match=rf"after 2 attempts \(connection dropped after {CUT} "):
        download(config, quiet=True)
    assert partial_path(config).read_bytes() == payload[:CUT]
    assert config.raw_path.read_bytes() == previous

    server.fault = Fault()
    download(config, quiet=True)
    assert server.ranges() == [None, f"bytes={CUT}-", f"bytes={CUT}-"]
    assert [r.status for r in server.requests] == [200, 200, 206]
    assert config.raw_path.read_bytes() == payload
    assert not partial_path(config).exists()


def test_complete_partial_file_is_finished_without_refetching(tmp_path, payload, server):
    config = make_config(tmp_path, server.url)
    partial_path(config).parent.mkdir(parents=True)
    partial_path(config).write_bytes(payload)  # e.g. interrupted while being verified
    download(config, quiet=True)
    assert server.ranges() == [f"bytes={len(payload)}-"]
    assert [r.status for r in server.requests] == [416]
    assert config.raw_path.read_bytes() == payload


def test_partial_file_longer_than_the_servers_is_discarded(tmp_path, payload, server):
    config = make_config(tmp_path, server.url)
    partial_path(config).parent.mkdir(parents=True)
    stale = payload + b"5\tstale bytes of another version\n"
    partial_path(config).write_bytes(stale)
    download(config, quiet=True)
    assert server.ranges() == [f"bytes={len(stale)}-", None]
    assert [r.status for r in server.requests] == [416, 200]
    assert config.raw_path.read_bytes() == payload


def test_resumed_file_that_fails_its_checksum_is_not_kept_for_the_next_try(
    tmp_path, payload, previous, server
):
    config = make_config(tmp_path, server.url, sha256=sha256(payload))
    put_previous(config, previous)
    junk = b"4\tnot the start of this file\n"
    partial_path(config).write_bytes(junk)
    with pytest.raises(PipelineError, match="checksum mismatch"):
        download(config, quiet=True)
    assert server.ranges() == [f"bytes={len(junk)}-"]
    assert not partial_path(config).exists()  # so the next run starts from byte 0
    assert config.raw_path.read_bytes() == previous
    download(config, quiet=True)
    assert server.ranges() == [f"bytes={len(junk)}-", None]
    assert config.raw_path.read_bytes() == payload


def test_without_sha256_any_review_file_is_accepted(tmp_path, payload, server):
    config = make_config(tmp_path, server.url)
    assert config.sha256 is None
    result = download(config, quiet=True)
    assert config.raw_path.read_bytes() == payload
    assert set(result) == {"source", "bytes", "sha256"}  # no blob id: not the official source


def test_sha256_is_compared_case_insensitively(tmp_path, payload, server):
    config = make_config(tmp_path, server.url, sha256=sha256(payload).upper())
    download(config, quiet=True)
    assert config.raw_path.read_bytes() == payload


def test_progress_bar_does_not_break_the_download(tmp_path, payload, server, capsys):
    server.fault = Fault(cut_after=CUT, cut_times=1)
    config = make_config(tmp_path, server.url)
    download(config, quiet=False)
    assert config.raw_path.read_bytes() == payload
    assert "download" in capsys.readouterr().err


# -- unreachable hosts and disk errors -------------------------------------------------------------
def test_unreachable_host_says_to_download_elsewhere(tmp_path, previous):
    port = unused_port()
    config = make_config(tmp_path, f"http://127.0.0.1:{port}/naver_shopping.txt")
    put_previous(config, previous)
    with pytest.raises(PipelineError) as info:
        download(config, quiet=True)
    assert str(info.value) == (
        f"cannot reach 127.0.0.1:{port} after 3 attempts (Connection refused); download "
        "naver_shopping.txt elsewhere and pass --source PATH"
    )
    assert config.raw_path.read_bytes() == previous


def test_credentials_in_the_url_stay_out_of_the_message(tmp_path):
    port = unused_port()
    config = make_config(tmp_path, f"http://user:secret@127.0.0.1:{port}/f.txt", download_retries=0)
    with pytest.raises(PipelineError, match=rf"^cannot reach 127\.0\.0\.1:{port} after 1 attempt "):
        download(config, quiet=True)


def test_malformed_url_is_not_retried(tmp_path):
    config = make_config(tmp_path, "http://")
    with pytest.raises(PipelineError, match=r"^cannot download http://: .*check the --source URL"):
        download(config, quiet=True)


def test_data_dir_that_cannot_be_created(tmp_path, server):
    config = make_config(tmp_path, server.url)
    (tmp_path / "data").write_text("a file where the data folder should be")
    with pytest.raises(PipelineError, match=r"^cannot create .*data/raw: "):
        download(config, quiet=True)
    assert server.requests == []


def test_partial_file_that_cannot_be_written(tmp_path, payload, previous, server):
    config = make_config(tmp_path, server.url)
    put_previous(config, previous)
    partial_path(config).mkdir()  # a folder where the .part file should go
    with pytest.raises(
        PipelineError,
        match=r"^cannot write .*/raw: Is a directory; free some "
        r"space or choose another --data-dir$",
    ):
        download(config, quiet=True)
    assert config.raw_path.read_bytes() == previous


def test_final_name_that_cannot_be_replaced(tmp_path, payload, server):
    config = make_config(tmp_path, server.url)
    (config.raw_path / "something").mkdir(parents=True)  # a non-empty folder at the final name
    with pytest.raises(
        PipelineError,
        match=r"^cannot move the download into place at .*"
        r"naver_shopping\.txt: ",
    ):
        download(config, quiet=True)
    assert config.raw_path.is_dir()
    assert not partial_path(config).exists()


# -- local sources ---------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["path", "file URL"])
def test_local_source_is_copied(tmp_path, payload, previous, form):
    source = str(SAMPLE) if form == "path" else SAMPLE.as_uri()
    config = make_config(tmp_path, source, sha256=sha256(payload))
    put_previous(config, previous)
    assert local_source(source) == SAMPLE
    result = download(config, quiet=True)
    assert config.raw_path.read_bytes() == payload
    assert result == {"source": source, "bytes": len(payload), "sha256": sha256(payload)}
    assert sorted(p.name for p in config.raw_path.parent.iterdir()) == [config.raw_path.name]


def test_file_url_with_escaped_characters(tmp_path, payload):
    copy = tmp_path / "my reviews" / "naver shopping.txt"
    copy.parent.mkdir()
    copy.write_bytes(payload)
    config = make_config(tmp_path, copy.as_uri())
    assert "%20" in config.source
    download(config, quiet=True)
    assert config.raw_path.read_bytes() == payload


def test_missing_local_file(tmp_path, previous):
    config = make_config(tmp_path, str(tmp_path / "nothing.txt"))
    put_previous(config, previous)
    with pytest.raises(PipelineError, match=r"nothing\.txt does not exist; pass --source"):
        run_stage(get_stage("download"), config, quiet=True)
    assert config.raw_path.read_bytes() == previous


def test_local_folder_is_not_a_file(tmp_path):
    config = make_config(tmp_path, str(tmp_path))
    with pytest.raises(PipelineError, match=r"is not a file; pass --source"):
        download(config, quiet=True)
    assert not config.raw_path.exists()


def test_local_file_with_the_wrong_checksum(tmp_path, payload, previous):
    config = make_config(tmp_path, str(SAMPLE), sha256="0" * 64)
    put_previous(config, previous)
    with pytest.raises(PipelineError) as info:
        download(config, quiet=True)
    assert f"expected sha256 {'0' * 64}, got {sha256(payload)}" in str(info.value)
    assert config.raw_path.read_bytes() == previous
    assert sorted(p.name for p in config.raw_path.parent.iterdir()) == [config.raw_path.name]


def test_unsupported_scheme(tmp_path):
    with pytest.raises(PipelineError, match=r"unsupported source 'ftp://example\.org/x\.txt'"):
        download(make_config(tmp_path, "ftp://example.org/x.txt"), quiet=True)


# -- the official source's git blob id -------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"hello\n", "5\t배송 빠르고 좋아요\n".encode(), None])
def test_git_blob_id_matches_git_hash_object(tmp_path, payload, content):
    path = tmp_path / "blob.txt"
    path.write_bytes(payload if content is None else content)
    try:
        out = subprocess.run(
            ["git", "hash-object", str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("git is not installed")
    assert git_blob_id(path) == out.stdout.strip()


def test_official_source_is_checked_against_its_blob_id(tmp_path, payload):
    config = Config(data_dir=tmp_path / "data", source=OFFICIAL_SOURCE)
    assert config.is_official_source
    path = tmp_path / "naver_shopping.txt"
    path.write_bytes(payload)  # real review lines, but only 2,000 of them: not the official file
    with pytest.raises(PipelineError) as info:
        _verify(config, path)
    assert str(info.value).startswith(
        f"checksum mismatch for {OFFICIAL_SOURCE}: expected git blob id {OFFICIAL_BLOB_ID}, "
        f"got {git_blob_id(path)}; "
    )


def test_other_sources_are_not_checked_against_the_blob_id(tmp_path, payload):
    path = tmp_path / "naver_shopping.txt"
    path.write_bytes(payload)
    checks = _verify(Config(source=str(path)), path)
    assert checks == {"sha256": sha256(payload)}


# -- table sources ---------------------------------------------------------------------------------
def test_a_csv_source_is_kept_byte_for_byte_once_its_columns_are_named(tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_bytes("\ufeffreview,stars\r\n좋아요,5\r\n".encode())  # no tab anywhere
    with pytest.raises(PipelineError, match="name a table's review column with --text-column"):
        download(make_config(tmp_path, str(source)), quiet=True)
    config = make_config(tmp_path, str(source), text_column="review", rating_column="stars")
    download(config, quiet=True)
    assert config.raw_path.read_bytes() == source.read_bytes()
