"""What a run reads from the network, as the seed scripts did: an original checkpoint by its published address, hub
models by name, and the files the published checks were measured with. The caches come first, and they are the
ecosystem's own: torch.hub's (``torch.hub.get_dir()/checkpoints``, where ``load_state_dict_from_url`` keeps the
original checkpoints) and huggingface_hub's. With ``HF_HUB_OFFLINE=1`` nothing is fetched.

A host is tried once per run: where it cannot be reached, the run says so once (huggingface_hub alone would retry
each file for about 23 s) and takes what the caches hold. A download never leaves a partial file under its final
name; a file the loader refuses is removed from the cache by the caller (``forget``). Every file a run read from
the network or a cache of it is recorded with its address and SHA-256, for the report.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from converters.errors import ConversionError, first_line

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
CHUNK = 1 << 20
PROBE_SECONDS = 5.0


class FetchFailure(Exception):
    """What could not be fetched, and why: one line, named by what needed it."""


@dataclass(frozen=True)
class Fetched:
    address: str  # the URL, or hub:REPO/FILE@COMMIT
    path: str
    sha256: str
    bytes: int
    how: str  # "downloaded", or "cached" (found in the cache, not fetched now)


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (1.4 s): ``$TORCH_HOME/hub``, else
    ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub`` (tests/test_fetch.py holds it to torch's)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def is_url(value: object) -> bool:
    return isinstance(value, str) and urlparse(value).scheme in ("http", "https")


def hub_offline() -> bool:
    """huggingface_hub's own reading of ``HF_HUB_OFFLINE`` (taken when it was imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Fetcher:
    """One run's fetching: whether it may use the network, which hosts it could not reach, what it read."""

    offline: bool = field(default_factory=hub_offline)
    progress: bool = field(default_factory=lambda: sys.stderr.isatty())  # bars on a terminal, never in a log
    fetched: list[Fetched] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said once each, under the checks' table
    _unreachable: dict[str, str] = field(default_factory=dict)  # host -> why
    _probed: set[str] = field(default_factory=set)

    # -- reaching a host -----------------------------------------------------------------------------------------

    def unreachable(self, url: str) -> str | None:
        """Why ``url``'s host cannot be reached (tried once per run, quickly), or None."""
        parsed = urlparse(url)
        host = parsed.hostname or ""
        key = f"{parsed.scheme}://{parsed.netloc}"
        if key not in self._probed:
            self._probed.add(key)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            except OSError as error:  # refused, unresolved (socket.gaierror), timed out
                why = (error.strerror or first_line(error) or "no answer").lower()
                self._unreachable[key] = why
                self.notes.append(
                    f"{key} cannot be reached ({why}): what needs it was taken from the caches or left out; "
                    f"HF_HUB_OFFLINE=1 uses the caches without trying"
                )
        return self._unreachable.get(key)

    def _record(self, address: str, path: Path, how: str) -> Path:
        self.fetched.append(Fetched(address, str(path), sha256_of(path), path.stat().st_size, how))
        return path

    # -- plain addresses -----------------------------------------------------------------------------------------

    def url(self, url: str, directory: Path) -> Path:
        """The file at ``url``, from ``directory`` (under the address's file name, as torch.hub keeps it) or
        downloaded there."""
        target = directory / os.path.basename(urlparse(url).path)
        if target.is_file():
            return self._record(url, target, "cached")
        if self.offline:
            raise FetchFailure(f"{url} is not in {directory}, and HF_HUB_OFFLINE=1 fetches nothing")
        why = self.unreachable(url)
        if why is not None:
            raise FetchFailure(f"{url} cannot be fetched ({why}) and is not in {directory}")
        download(url, target, self.progress)
        return self._record(url, target, "downloaded")

    # -- the Hugging Face hub ------------------------------------------------------------------------------------

    def hub_file(self, repo_id: str, filename: str, repo_type: str = "model", revision: str | None = None) -> Path:
        """A file of a hub repository: from huggingface_hub's cache, else downloaded into it."""
        return self._cached(repo_id, filename, repo_type, revision) or self._download(
            repo_id, filename, repo_type, revision
        )

    @staticmethod
    def _address(repo_id: str, filename: str, repo_type: str, revision: str | None) -> str:
        at = f"@{revision}" if revision else ""
        return f"hub:{'datasets/' if repo_type == 'dataset' else ''}{repo_id}/{filename}{at}"

    def _cached(self, repo_id: str, filename: str, repo_type: str, revision: str | None) -> Path | None:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision,
                                        local_files_only=True))  # fmt: skip
        except Exception:  # not cached, whatever huggingface_hub calls it
            return None
        return self._record(self._address(repo_id, filename, repo_type, revision), path, "cached")

    def _download(self, repo_id: str, filename: str, repo_type: str, revision: str | None) -> Path:
        from huggingface_hub import hf_hub_download

        address = self._address(repo_id, filename, repo_type, revision)
        if self.offline:
            raise FetchFailure(f"{address} is not in the local Hugging Face cache; HF_HUB_OFFLINE=1 fetches nothing")
        endpoint = hub_endpoint()
        why = self.unreachable(endpoint)
        if why is not None:
            raise FetchFailure(f"{address} cannot be fetched from {endpoint} ({why}) and is not in the local cache")
        try:
            with _quiet(self.progress):
                path = Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision,
                                            endpoint=endpoint))  # fmt: skip
        except Exception as error:
            raise FetchFailure(hub_failure(error, repo_id, filename, repo_type, revision)) from None
        return self._record(address, path, "downloaded")

    def hub_model(self, name: str, files: Sequence[str], revision: str | None = None) -> Path:
        """A hub model's directory (its snapshot in the cache) holding ``files`` and its weights, each from the cache
        or downloaded: only what the run needs. ``NAME@REVISION`` pins one revision."""
        repo_id, _, pinned = name.partition("@")
        revision = pinned or revision
        weights = self._hub_weights(repo_id, revision)
        for filename in files:
            self.hub_file(repo_id, filename, revision=revision)
        return weights.parent

    def _hub_weights(self, repo_id: str, revision: str | None) -> Path:
        """``model.safetensors``, else its shards, else ``pytorch_model.bin`` (read with weights_only) or its shards:
        the first the cache holds, else the first the hub has."""
        path = next((found for name in WEIGHTS if (found := self._cached(repo_id, name, "model", revision))), None)
        missing = []
        for filename in WEIGHTS if path is None else ():
            try:
                path = self._download(repo_id, filename, "model", revision)
                break
            except FetchFailure as failure:
                if "has no file" not in str(failure):
                    raise
                missing.append(filename)
        if path is None:
            raise FetchFailure(f"hub model {repo_id!r} has no weights file ({', '.join(missing)})")
        if path.name.endswith(".index.json"):
            import json

            for shard in sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())):
                self.hub_file(repo_id, shard, revision=revision)
        return path


def hub_failure(error: BaseException, repo_id: str, filename: str, repo_type: str, revision: str | None) -> str:
    """huggingface_hub's error as a cause a user acts on."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kind = "dataset" if repo_type == "dataset" else "model"
    status = getattr(getattr(error, "response", None), "status_code", None)
    login = "log in (hf auth login) or set HF_TOKEN to a token with access to it"
    if isinstance(error, GatedRepoError):
        return f"access to hub {kind} {repo_id!r} was refused ({status}): it is gated; {login}"
    if isinstance(error, RevisionNotFoundError):
        return f"hub {kind} {repo_id!r} has no revision {revision!r}"
    if isinstance(error, EntryNotFoundError):
        return f"hub {kind} {repo_id!r} has no file {filename!r}" + (f" at {revision!r}" if revision else "")
    if isinstance(error, RepositoryNotFoundError):
        if status == 401:  # the hub answers so for a private repository as for a missing one
            return (f"hub {kind} {repo_id!r} was not found (401): it does not exist, or it is private and this run "
                    f"has no access to it: {login}")  # fmt: skip
        return f"hub {kind} {repo_id!r} was not found ({status})"
    if status in (401, 403):
        return f"access to hub {kind} {repo_id!r} was refused ({status}: {first_line(error)}): {login}"
    fault = _disk_fault(error)
    if fault is not None:
        return f"{fault} while downloading {filename!r} of hub {kind} {repo_id!r}; nothing of it was kept"
    if isinstance(error, HfHubHTTPError):
        return f"hub {kind} {repo_id!r}: {filename!r} could not be fetched ({status}: {first_line(error)})"
    return f"hub {kind} {repo_id!r}: {filename!r} could not be fetched ({first_line(error)})"


def _disk_fault(error: BaseException) -> str | None:
    for found in (error, error.__cause__, error.__context__):
        if isinstance(found, OSError) and found.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            return os.strerror(found.errno).lower()
    return None


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """huggingface_hub's progress bars on a terminal only; its setting restored afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        yield
    finally:
        (disable_progress_bars if was else enable_progress_bars)()


def download(url: str, target: Path, progress: bool = False) -> None:
    """``url`` into ``target``: written to a partial file beside it, its length held to the server's, flushed to
    disk, then renamed into place; nothing is left under either name when it fails."""
    import urllib.error
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    request = urllib.request.Request(url, headers={"User-Agent": "audio-checkpoint-converters"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, partial.open("wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            bar = _bar(expected, target.name) if progress else None
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
            if expected is not None and received != expected:
                raise FetchFailure(f"{url}: the download ended after {received} of {expected} bytes; nothing was kept")
            out.flush()
            os.fsync(out.fileno())
        partial.rename(target)
    except FetchFailure:
        partial.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as error:
        partial.unlink(missing_ok=True)
        raise FetchFailure(f"{url}: the server answered {error.code} ({error.reason})") from None
    except OSError as error:  # the network, the disk, an interrupted body (http.client.IncompleteRead)
        partial.unlink(missing_ok=True)
        fault = _disk_fault(error)
        cause = f"{fault} while writing {partial}" if fault else first_line(error)
        raise FetchFailure(f"{url}: {cause}; nothing was kept") from None
    except BaseException:  # interrupted: nothing a later run would take for the file
        partial.unlink(missing_ok=True)
        raise


def _bar(total: int | None, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr)


def refuse(failures: Sequence[str]) -> None:
    """Every input that could not be had, in one refusal, with the ways out."""
    if not failures:
        return
    raise ConversionError(
        "; ".join(failures) + ". Give local files instead (--checkpoint_path FILE, a local model directory), or set "
        "HF_HUB_OFFLINE=1 to use only what the caches hold"
    )
