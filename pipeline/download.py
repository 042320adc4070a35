"""Fetch the raw review file from a URL or a local path, verify it, and move it into place.

HTTP(S) streams through requests into a `.part` file beside the destination, retrying connection
errors and 5xx with exponential backoff and resuming with a Range request; the verified file is
renamed into place, so the previous good file survives any failure. An attempt that moved the
partial file forward does not count against `download_retries`: only attempts in a row that
got nothing new do.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
import urllib3
from tqdm.auto import tqdm

from pipeline.config import OFFICIAL_BLOB_ID, Config
from pipeline.errors import PipelineError
from pipeline.files import git_blob_id, sha256_file

_CHUNK = 1 << 16
_HEAD = 4096  # bytes looked at to tell the review file from a web page or an error message
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<?xml")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
# What a connection breaking mid-body raises: requests' wrappers, or urllib3's own errors
# (ProtocolError for a cut or a reset, ReadTimeoutError for a stall) when read directly.
_BROKEN_STREAM = (
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)


class _RetryableError(Exception):
    """A failure worth another try: the connection broke or the server answered 5xx."""


class _Restart(Exception):
    """The partial file cannot be resumed; it was removed and the next try starts from byte 0."""


def download(config: Config, quiet: bool = False) -> dict:
    """Put a verified copy of `config.source` at `config.raw_path`; return what was fetched."""
    dest = config.raw_path
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"cannot create {dest.parent}: {_strerror(exc)}") from None
    local = local_source(config.source)
    if local is None:
        part = partial_path(config)
        _fetch_http(config, part, quiet)
    else:
        part = dest.with_name(f".{dest.name}.copy.part")
        _copy_local(local, part)
    try:
        checks = _verify(config, part)
    except BaseException:
        # A finished file that fails verification is useless for resuming: start over next time.
        part.unlink(missing_ok=True)
        raise
    try:
        part.replace(dest)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise PipelineError(
            f"cannot move the download into place at {dest}: {_strerror(exc)}"
        ) from None
    return {"source": config.source, "bytes": dest.stat().st_size, **checks}


def partial_path(config: Config) -> Path:
    """Where an HTTP download of `config.source` collects its bytes until they are verified.

    The name carries a hash of the source URL: a partial file is only resumed for the same URL.
    """
    dest = config.raw_path
    key = hashlib.sha1(config.source.encode()).hexdigest()[:10]
    return dest.with_name(f".{dest.name}.{key}.part")


def local_source(source: str) -> Path | None:
    """The file a local path or file:// URL names; None for http(s) URLs."""
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(unquote(parsed.path))
    if len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise PipelineError(
            f"unsupported source {source!r}: use an http(s) URL, a file:// URL or a local path"
        )
    return Path(source).expanduser()


def _copy_local(path: Path, part: Path) -> None:
    # A missing file is run_stage's to report: it checks every stage's inputs exist.
    if not path.is_file():
        raise PipelineError(
            f"source {path} is not a file; pass --source with the path or URL of naver_shopping.txt"
        )
    try:
        shutil.copyfile(path, part)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise PipelineError(f"cannot copy {path} to {part.parent}: {_strerror(exc)}") from None


def _fetch_http(config: Config, part: Path, quiet: bool) -> None:
    where = _host(config.source)
    attempts = failures = 0
    best = _size(part)  # the furthest the partial file has got
    last_error, unreachable = "", False
    while True:
        attempts += 1
        try:
            _stream_once(config, part, quiet)
            return
        except _Restart:
            # Not a failure: only our partial file was unusable. `best` stays where it was, so
            # refetching the same bytes is no progress, and a server that breaks every resume
            # still runs out of retries.
            continue
        except _RetryableError as exc:
            last_error, unreachable = str(exc), False
        except (requests.ConnectionError, requests.Timeout) as exc:
            last_error = _describe(exc, config.download_timeout)
            unreachable = _never_connected(exc)
        except requests.RequestException as exc:  # a bad URL, a redirect loop: no point retrying
            raise PipelineError(
                f"cannot download {config.source}: {_describe(exc, config.download_timeout)}; "
                "check the --source URL"
            ) from None
        except OSError as exc:  # requests' own errors are OSErrors too, so this comes last
            raise PipelineError(
                f"cannot write {part.parent}: {_strerror(exc)}; free some space or choose "
                "another --data-dir"
            ) from None
        if _size(part) > best:
            best = _size(part)
            failures = 0  # progress: resume at once, the connection is merely flaky
            continue
        failures += 1
        if failures > config.download_retries:
            break
        time.sleep(config.download_backoff * 2 ** (failures - 1))
    verb = "reach" if unreachable else "download from"
    raise PipelineError(
        f"cannot {verb} {where} after {attempts} attempt{'s' * (attempts > 1)} ({last_error}); "
        "download naver_shopping.txt elsewhere and pass --source PATH"
    )


def _stream_once(config: Config, part: Path, quiet: bool) -> None:
    offset = _size(part)
    # identity: Range and Content-Length then count the file's own bytes, not gzip's.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = (config.download_timeout, config.download_timeout)
    with requests.get(config.source, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset:
            if _unsatisfied_total(response) == offset:
                return  # the partial file already holds the whole file
            part.unlink(missing_ok=True)  # not a prefix of what the server has now
            raise _Restart
        if status >= 500:
            raise _RetryableError(f"server error HTTP {status} {response.reason}".strip())
        if status >= 300:
            raise PipelineError(
                f"{config.source} answered HTTP {status} ({response.reason}); "
                "check the --source URL"
            )
        content_type = response.headers.get("Content-Type", "")
        if "html" in content_type.lower():
            raise PipelineError(
                f"{config.source} returned a web page ({content_type}), not the review file; "
                "check the --source URL (for GitHub use the raw file address)"
            )
        length = response.headers.get("Content-Length", "")
        length = int(length) if length.strip().isdigit() else None
        resumed = status == 206
        if resumed:
            start, total = _content_range(response)
            if start != offset:  # not the bytes we asked for
                if not offset:
                    raise PipelineError(
                        f"{config.source} answered a whole-file request with part of the file "
                        f"(Content-Range {response.headers.get('Content-Range')!r})"
                    )
                part.unlink(missing_ok=True)
                raise _Restart
            if total is None and length is not None:
                total = offset + length
        else:
            offset = 0  # the server ignored Range: take the whole body from the start
            total = length
        with (
            part.open("ab" if resumed else "wb") as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="download",
                disable=quiet,
                leave=False,
            ) as bar,
        ):
            try:
                for chunk in _chunks(response):
                    fh.write(chunk)
                    bar.update(len(chunk))
            except _BROKEN_STREAM as exc:
                got = f"{fh.tell()} of {total}" if total is not None else f"{fh.tell()}"
                reason = _describe(exc, config.download_timeout) if _timed_out(exc) else ""
                raise _RetryableError(
                    f"connection dropped after {got} bytes{f', {reason}' if reason else ''}"
                ) from exc
        size = _size(part)
        if total is not None and size < total:
            raise _RetryableError(f"connection closed after {size} of {total} bytes")


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: each chunk is what the socket had, so a cut loses nothing received.

    (iter_content waits to fill a whole chunk and drops the bytes it holds when the connection
    breaks, which would make a resume start up to a chunk too early.)
    """
    read1 = getattr(response.raw, "read1", None)  # urllib3 >= 2.3
    if read1 is None:
        yield from response.iter_content(_CHUNK)
        return
    while chunk := read1(_CHUNK, decode_content=True):
        yield chunk


def _content_range(response: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, full size) from a 206 answer's Content-Range; None where it does not say."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match:
        return None, None
    first, _, full = match.groups()
    return int(first), (None if full == "*" else int(full))


def _unsatisfied_total(response: requests.Response) -> int | None:
    match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _verify(config: Config, path: Path) -> dict:
    """Reject web pages, error messages and checksum mismatches; return the checksums computed."""
    try:
        return _checks(config, path)
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {_strerror(exc)}") from None


def _checks(config: Config, path: Path) -> dict:
    with path.open("rb") as fh:
        head = fh.read(_HEAD)
    if not head:
        raise PipelineError(f"{config.source} is empty; check the --source URL or path")
    start = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if start.startswith(_HTML_MARKERS):
        raise PipelineError(
            f"{config.source} holds a web page, not the review file; check the --source URL"
        )
    if config.source_layout == "ratings" and b"\t" not in head:
        preview = head[:60].decode("utf-8", "replace").strip().replace("\n", " ")
        raise PipelineError(
            f"{config.source} does not look like the review file (no RATING<TAB>REVIEW line "
            f"at its start; it begins {preview!r}); check the --source URL or path, or name a "
            "table's review column with --text-column"
        )
    checks = {"sha256": sha256_file(path)}
    if config.sha256 and checks["sha256"] != config.sha256.strip().lower():
        raise PipelineError(
            f"checksum mismatch for {config.source}: expected sha256 {config.sha256}, got "
            f"{checks['sha256']}; the file is corrupt or not the one expected"
        )
    if config.is_official_source:
        checks["git_blob_id"] = git_blob_id(path)
        if checks["git_blob_id"] != OFFICIAL_BLOB_ID:
            raise PipelineError(
                f"checksum mismatch for {config.source}: expected git blob id "
                f"{OFFICIAL_BLOB_ID}, got {checks['git_blob_id']}; the download is corrupt, "
                "try again or pass --source with a good copy"
            )
    return checks


# -- small helpers --------------------------------------------------------------------------------
def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _host(url: str) -> str:
    """host[:port] of a URL, without any user name or password it carries."""
    parsed = urlparse(url)
    host = parsed.hostname or parsed.netloc or url
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parsed.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (args, urllib3's .reason, __cause__, __context__)."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        for link in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(link, BaseException):
                todo.append(link)


def _timed_out(exc: BaseException) -> bool:
    return any(
        isinstance(e, (TimeoutError, requests.Timeout)) or "timed out" in str(e).lower()
        for e in _causes(exc)
    )


def _never_connected(exc: BaseException) -> bool:
    """True when no connection was made at all: name lookup failed, refused, or connect timeout."""
    connect_errors = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    return isinstance(exc, requests.ConnectTimeout) or any(
        isinstance(e, connect_errors) for e in _causes(exc)
    )


def _describe(exc: BaseException, timeout: float) -> str:
    """A short reason for a requests error: the OS's words when there are some."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {timeout:g} s"
    if _timed_out(exc):
        return f"no data for {timeout:g} s"
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return f"{type(exc).__name__}: {exc}"
