"""Registering frames: read headers, classify, verify structure, record one exposure row each.

Idempotent: a file already registered with the same path, size and modification time is
left as it is (a changed file is checksummed again; the store forgets its measurements
when the checksum, frame type, exposure time or DATE-OBS changed). A file that cannot be
used (not FITS, truncated, missing extensions, corrupt headers) is recorded as `invalid`
with its reason; a frame of unknown type is registered as UNKNOWN with the keyword values
that matched no rule; a second file with an already registered name is reported and
skipped. Nothing here stops on a bad file.

Header values are validated (`viskom.le1.header`): unusable values, and keywords the frame
type's monitors need but the header lacks, are recorded as warnings on the exposure
(`header_warnings`); the frame stays registered, and the stages that need such a keyword
fail with the reason when they run. The exposure's columns hold only usable values (a bad
EXPTIME is stored as NULL, never as a default). Files checked by an older version of the
checks are read again on the next ingest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from viskom.le1.classify import Rule, classify, load_rules
from viskom.le1.frame import FrameError, Le1Frame
from viskom.le1.header import HEADER_CHECK_VERSION, HeaderProblem
from viskom.le1.names import exposure_name
from viskom.sources.local import find_frame_files
from viskom.store import ExposureRecord, Store


@dataclass
class IngestReport:
    """What an ingest did, file by file."""

    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    unknown_type: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (name, explanation)
    #: (name, problems) of the exposures with unusable or missing header values
    header_warnings: list[tuple[str, list[HeaderProblem]]] = field(default_factory=list)


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks (large frames never sit in memory)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_file(
    path: Path, rules: tuple[Rule, ...] | None = None, checksum: str | None = None
) -> ExposureRecord:
    """An exposure record for one file: header summary, frame type, or why it is invalid.
    `checksum`: the file's SHA-256 when the caller already has it (a verified download)."""
    name = exposure_name(path)
    size = path.stat().st_size
    checksum = checksum or sha256_of(path)
    base = {"name": name, "path": str(path.resolve()), "size_bytes": size, "checksum": checksum}
    try:
        frame = Le1Frame(path)
    except FrameError as exc:
        return ExposureRecord(state="invalid", reason=f"{exc.kind}: {exc}", **base)
    with frame:
        ph = frame.primary
        ident = frame.identity
        problems = frame.problems()
        cls = classify(frame.primary_fits_header, rules)
        header = dict(ph.summary)
        header["naming_convention"] = ident.convention
        if frame.warnings:
            header["fits_warnings"] = frame.warnings[:5]
        try:
            warnings = frame.header_problems(cls.frame_type)
        except (ValueError, TypeError, KeyError, FrameError):  # a broken extension header:
            warnings = [*ph.problems, *ph.missing_for(cls.frame_type)]  # already invalid
        reason = "; ".join(problems) if problems else cls.reason
        return ExposureRecord(
            state="invalid" if problems else "registered",
            frame_type=cls.frame_type,
            reason=reason,
            date_obs=ph.date_obs or ident.timestamp,
            mjd_obs=ph.mjd_obs,
            exptime=ph.exptime,
            ra=ph.ra,
            dec=ph.dec,
            pa=ph.pa,
            obs_id=ph.obs_id or (str(ident.obs_id) if ident.obs_id is not None else None),
            dither=ph.dither if ph.dither is not None else ident.dither,
            exposure_index=ident.exposure_index,
            img_cat=ph.img_cat,
            img_t1=ph.img_t1,
            img_t2=ph.img_t2,
            obs_mode=ph.obs_mode,
            n_quadrants=len(frame.quadrant_extnames),
            header=header,
            header_warnings=[w.as_dict() for w in warnings] or None,
            **base,
        )


def ingest(
    store: Store,
    paths: Iterable[str | Path],
    *,
    rules_path: Path | None = None,
    progress: Callable[[Path], None] | None = None,
    checksums: Mapping[str, KnownChecksum] | None = None,
) -> IngestReport:
    """Register every frame file under `paths`; bad files are recorded, never fatal.

    `checksums`: SHA-256 sums the caller computed while writing files (`fetch`: the bytes as
    downloaded), by resolved path; used only while the file has the size and mtime they were
    taken at, so that a just-downloaded frame is not read a second time to be hashed."""
    rules = load_rules(str(rules_path) if rules_path else None)
    report = IngestReport()
    for path in find_frame_files(paths):
        if progress:
            progress(path)
        name = exposure_name(path)
        known = store.get_exposure(name)
        if (
            known is not None
            and known.path == str(path.resolve())
            and known.size_bytes == path.stat().st_size
            and known.header is not None
            and known.header.get("_mtime_ns") == path.stat().st_mtime_ns
            and known.header.get("_header_check") == HEADER_CHECK_VERSION
        ):
            report.unchanged.append(name)
            _tally_problem(report, known.name, known.state, known.frame_type, known.reason)
            _tally_warnings(report, known.name, known.header_warnings)
            continue
        if (
            known is not None
            and known.path != str(path.resolve())
            and Path(known.path).exists()
            and known.state == "registered"
        ):
            # Two files, one exposure name (X.fits beside X.fits.gz, or two folders): keep
            # the registered one and say so, rather than flip between them on every ingest.
            report.duplicates.append((name, f"{path} duplicates {known.path}; kept the latter"))
            continue
        try:
            record = describe_file(path, rules, _known_checksum(path, checksums))
        except Exception as exc:  # any unreadable file is recorded, never fatal
            record = ExposureRecord(
                name=name,
                path=str(path.resolve()),
                state="invalid",
                reason=f"unreadable: {type(exc).__name__}: {exc}",
            )
        header = dict(record.header or {})
        header["_mtime_ns"] = path.stat().st_mtime_ns
        header["_header_check"] = HEADER_CHECK_VERSION
        record = replace(record, header=header)
        _, created = store.register_exposure(record)
        (report.new if created else report.updated).append(name)
        _tally_problem(report, name, record.state, record.frame_type, record.reason)
        _tally_warnings(report, name, record.header_warnings)
    return report


@dataclass(frozen=True)
class KnownChecksum:
    """A file's SHA-256 and the size and mtime (ns) it was taken at."""

    size: int
    mtime_ns: int
    sha256: str


def _known_checksum(path: Path, checksums: Mapping[str, KnownChecksum] | None) -> str | None:
    """The caller's SHA-256 of `path` if the file is still as it was when it was taken."""
    known = (checksums or {}).get(str(path.resolve()))
    if known is None:
        return None
    st = path.stat()
    return known.sha256 if (st.st_size, st.st_mtime_ns) == (known.size, known.mtime_ns) else None


def _tally_warnings(report: IngestReport, name: str, stored: list[dict] | None) -> None:
    if stored:
        report.header_warnings.append((name, [HeaderProblem.from_dict(w) for w in stored]))


def _tally_problem(
    report: IngestReport, name: str, state: str, frame_type: str | None, reason: str | None
) -> None:
    if state == "invalid":
        report.invalid.append((name, reason or "invalid"))
    elif frame_type == "UNKNOWN":
        report.unknown_type.append((name, reason or "unknown frame type"))
