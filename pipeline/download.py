"""Fetch the raw review file from a URL or a local path, verify it, and move it into place.

HTTP(S) streams through requests into a `.part` file beside the destination, retrying connection
errors and 5xx with backoff and resuming with a Range request; the verified file is renamed into
place, so the previous good file survives any failure.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from tqdm.auto import tqdm

from pipeline.config import OFFICIAL_BLOB_ID, Config
from pipeline.errors import PipelineError
from pipeline.files import git_blob_id, sha256_file

_CHUNK = 1 << 16
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<?xml")


class _RetryableError(Exception):
    """A failure worth another try: the connection broke or the server answered 5xx."""


def download(config: Config, quiet: bool = False) -> dict:
    """Put a verified copy of `config.source` at `config.raw_path`; return what was fetched."""
    dest = config.raw_path
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"cannot create {dest.parent}: {exc.strerror}") from None
    local = local_source(config.source)
    if local is None:
        part = dest.with_name(f".{dest.name}.{_source_key(config.source)}.part")
        _fetch_http(config, part, quiet)
    else:
        part = dest.with_name(f".{dest.name}.copy.part")
        _copy_local(local, part)
    try:
        checks = _verify(config, part)
        part.replace(dest)
    except BaseException:
        # A finished file that fails verification is useless for resuming: start over next time.
        part.unlink(missing_ok=True)
        raise
    return {"source": config.source, "bytes": dest.stat().st_size, **checks}


def _source_key(source: str) -> str:
    # Partial files are only resumed for the same source URL.
    return hashlib.sha1(source.encode()).hexdigest()[:10]


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
    if not path.is_file():
        raise PipelineError(
            f"source file {path} does not exist; pass --source with the path or URL of "
            "naver_shopping.txt"
        )
    try:
        shutil.copyfile(path, part)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise PipelineError(f"cannot copy {path} to {part.parent}: {exc.strerror}") from None


def _fetch_http(config: Config, part: Path, quiet: bool) -> None:
    host = urlparse(config.source).netloc
    last_error = ""
    for attempt in range(config.download_retries + 1):
        if attempt:
            time.sleep(config.download_backoff * 2 ** (attempt - 1))
        try:
            _stream_once(config, part, quiet)
            return
        except _RetryableError as exc:
            last_error = str(exc)
        except (requests.ConnectionError, requests.Timeout) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        except OSError as exc:
            raise PipelineError(
                f"cannot write {part.parent}: {exc.strerror}; free some space or choose "
                "another --data-dir"
            ) from None
    raise PipelineError(
        f"cannot download from {host} after {config.download_retries + 1} attempts "
        f"({last_error}); download naver_shopping.txt elsewhere and pass --source PATH"
    )


def _stream_once(config: Config, part: Path, quiet: bool) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = (config.download_timeout, config.download_timeout)
    with requests.get(config.source, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416:  # our partial file is not a prefix the server knows: start over
            part.unlink(missing_ok=True)
            raise _RetryableError("server refused to resume (HTTP 416)")
        if status >= 500:
            raise _RetryableError(f"server error HTTP {status}")
        if status >= 400:
            raise PipelineError(
                f"{config.source} answered HTTP {status} ({response.reason}); check the --source URL"
            )
        content_type = response.headers.get("Content-Type", "")
        if "html" in content_type.lower():
            raise PipelineError(
                f"{config.source} returned a web page ({content_type}), not the review file; "
                "check the --source URL (for GitHub use the raw file address)"
            )
        resumed = status == 206
        if not resumed:
            offset = 0  # the server ignored Range: take the whole body from the start
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with part.open("ab" if resumed else "wb") as fh, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc="download", disable=quiet, leave=False,
        ) as bar:
            try:
                for chunk in response.iter_content(_CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                raise _RetryableError(f"connection dropped after {fh.tell()} bytes ({exc})") from exc
        if total is not None and part.stat().st_size < total:
            raise _RetryableError(f"connection closed at {part.stat().st_size} of {total} bytes")


def _verify(config: Config, path: Path) -> dict:
    """Reject web pages and checksum mismatches; return the checksums computed."""
    with path.open("rb") as fh:
        head = fh.read(512).lstrip().lower()
    if head.startswith(_HTML_MARKERS):
        raise PipelineError(
            f"{config.source} holds a web page, not the review file; check the --source URL"
        )
    if path.stat().st_size == 0:
        raise PipelineError(f"{config.source} is empty; check the --source URL or path")
    checks = {"sha256": sha256_file(path)}
    if config.sha256 and checks["sha256"] != config.sha256.lower():
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
