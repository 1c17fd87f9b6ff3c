"""Colour an archive of photos on Ray Data: one machine or a cluster, resumable, one manifest row per photo.

    pip install ".[cpu,ray]"
    python -m runtime.batch scans/ --recursive -o colorized/            # a local Ray on this machine
    python -m runtime.batch list.txt "more/*.jpg" -o /shared/out --address auto --model colorizer-int8
    python -m runtime.batch old-run/manifest.parquet -o /shared/out2 --workers 64 --batch-size 32

SOURCES are folders, glob patterns, photos and lists of photos (.txt/.lst: one path per line; .csv/.parquet: the
column `path`, else the first one; relative entries are taken from the list's folder; lists and their entries may be
URIs that pyarrow reads, s3://, gs://, hdfs://). Each photo is coloured by runtime.colorize's own image path, so the
output is the same file, name, full resolution and pixels as `python -m runtime.colorize` writes, and it is written
the same atomic way. Videos are left to runtime.colorize (a failed row here).

Work runs in a pool of Ray actors, each holding one ONNX Runtime session (loaded once, --threads threads, 1 CPU of
Ray's per thread), fed batches of --batch-size photos while the driver streams the results into the manifest
(Parquet: path, output, status ok/skipped/failed, error, milliseconds, model_sha256, node). A bad photo is a failed
row, never a failed job. An output that exists is skipped, so a rerun of the same command resumes. Exit status as
runtime.colorize: 0 every photo ok or skipped, 1 some failed, 2 usage/model/Ray error, 130 SIGINT, 143 SIGTERM (the
manifest of what was done is still written).

With no --address (and no RAY_ADDRESS) a local Ray is started on this machine (at 127.0.0.1, no dashboard, a small
object store) and stopped at the end; --address auto joins the cluster `ray start` made here, HOST:PORT or
ray://HOST:PORT a remote one. Every node needs this package and the same model (a shipped name, or the same file at
the same path: the manifest records each actor's sha256, and a node whose file differs fails its rows); -o and the
photos must be paths every node can reach (a shared file system) or URIs.
"""

import argparse
import contextlib
import hashlib
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from runtime import cli, fileio
from runtime.fileio import InputError
from runtime.images import colorize_image
from runtime.inputs import IMAGE_EXTENSIONS, expand_inputs, media_kind, output_path
from runtime.model import ColorizerModel, resolve_model, shipped_model_path

LIST_SUFFIXES = {".txt", ".lst", ".csv", ".parquet"}
LOCAL_OBJECT_STORE_BYTES = 200 * 2**20  # the local Ray only moves file names and manifest rows
MANIFEST_FLUSH_ROWS = 10_000  # rows per Parquet row group
INSTALL_HINT = 'the batch command needs Ray Data: pip install "flower-colorization[cpu,ray]" (or ".[cpu,ray]")'


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Colorize an archive of photos on Ray Data (this machine or a cluster); resumable, with a "
                    "Parquet manifest of every photo.", conflict_handler="resolve")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="photo files, folders, glob patterns, or lists of photos (.txt/.lst, .csv/.parquet)")
    parser.add_argument("-o", "--output", required=True, help="output folder (reachable by every node)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join: auto (the one `ray start` made here), HOST:PORT or "
                             "ray://HOST:PORT (default: $RAY_ADDRESS, else a local Ray on this machine)")
    cli.add_model_options(parser)
    parser.add_argument("--threads", type=cli.positive_int, default=1,  # replaces the shared option's help
                        help="ONNX Runtime threads per actor, each reserving one of Ray's CPUs (default: 1)")
    parser.add_argument("--workers", type=cli.positive_int, default=None,
                        help="actors, each with one model session (default: the cluster's CPUs / --threads)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=16, help="photos per actor call (default: 16)")
    parser.add_argument("--manifest", default=None, help="manifest file (default: OUTPUT/manifest.parquet)")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    return parser


def import_ray():
    """ray and ray.data, imported only here: the runtime without the extra stays importable."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        fileio.fail(f"{INSTALL_HINT} ({fileio.first_line(error)})", cli.EXIT_USAGE)
    return ray


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- what to do

def is_uri(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def read_list(source: str) -> list[str]:
    """The photos a list names: .txt/.lst one per line, .csv (with a header line)/.parquet the `path` column (else
    the first); entries that are not absolute or URIs are taken from the list's own folder."""
    import pyarrow.csv
    import pyarrow.fs
    import pyarrow.parquet

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(source if is_uri(source) else os.path.abspath(source))
    suffix = Path(inner).suffix.lower()
    if suffix in (".csv", ".parquet"):
        with filesystem.open_input_file(inner) as handle:
            table = pyarrow.parquet.read_table(handle) if suffix == ".parquet" else pyarrow.csv.read_csv(handle)
        column = table.column("path" if "path" in table.column_names else 0)
        entries = [str(value) for value in column.to_pylist() if value not in (None, "")]
    else:
        with filesystem.open_input_stream(inner) as handle:
            entries = [line.strip() for line in handle.read().decode("utf-8").splitlines()]
        entries = [line for line in entries if line and not line.startswith("#")]
    base = source.rsplit("/", 1)[0] if is_uri(source) else os.path.dirname(os.path.abspath(source))
    return [entry if is_uri(entry) or os.path.isabs(entry) else f"{base}/{entry}" for entry in entries]


def find_photos(sources: list[str], outdir: Path, recursive: bool) -> tuple[list[tuple[str, str]], list[tuple]]:
    """-> ([(photo, output)], [(source, error)]): runtime.colorize's folder and glob scan and output names, plus
    lists of photos (their photos go flat into outdir, as single files do)."""
    found, failures, notes = [], [], []
    for source in sources:
        if Path(source.split("://")[-1]).suffix.lower() in LIST_SUFFIXES:
            try:
                entries = read_list(source)
            except (OSError, ValueError, KeyError, IndexError, TypeError, NotImplementedError) as error:  # pyarrow's
                failures.append((source, f"cannot read this list: {fileio.first_line(error)}"))
                continue
            found += [(entry, str(output_path(Path(entry.split("://")[-1]), Path(), outdir))) for entry in entries]
        else:
            inputs, errors = expand_inputs([source], outdir.resolve(), recursive, notes)
            found += [(str(path), str(output_path(path, subfolder, outdir))) for path, subfolder in inputs]
            failures += errors
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return found, failures


def plan(found: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """-> (work [(photo, output)], refused [(photo, output, reason)]): what runtime.colorize refuses before colouring
    (not a photo, an output that would replace an input or another photo's output) is refused here, by name."""
    inputs = {os.path.abspath(path) for path, _ in found if not is_uri(path)}
    planned, work, refused = {}, [], []
    for path, output in found:
        key = os.path.abspath(output)
        kind = media_kind(Path(path))
        if kind != "image":
            reason = ("a video: colour videos with python -m runtime.colorize" if kind == "video" else
                      f"not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif key in inputs:
            reason = f"output {output} would overwrite an input; choose another -o"
        elif key in planned:
            reason = f"output {output} is also the output of {planned[key]}; rename one of them"
        else:
            planned[key] = path
            work.append((path, output))
            continue
        refused.append((path, output, reason))
    return work, refused


# ---------------------------------------------------------------- the actor

class ColorizeBatch:
    """One Ray actor: one model session, loaded once, colouring batches of (path, output) rows into manifest rows.
    A model that cannot be loaded on this node, or differs from the driver's, fails the rows rather than the job,
    with the reason in each row."""

    def __init__(self, model: str | None, provider: str, size: int | None, temperature: float | None,
                 threads: int, expected_sha256: str):
        import cv2
        import ray

        cli.quiet_opencv()
        cv2.setNumThreads(threads)  # actors x threads = cores: OpenCV's resizes and colour conversions included
        # host and Ray node (several nodes may share a host); outside Ray, the host alone
        node = ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else ""
        self.node = f"{socket.gethostname()} {node}".strip()
        self.model, self.sha256, self.error = None, "", None
        try:
            self.sha256 = file_sha256(resolve_model(model))
            if self.sha256 != expected_sha256:
                raise InputError(f"its model {resolve_model(model)} (sha256 {self.sha256[:12]}) is not the driver's "
                                 f"(sha256 {expected_sha256[:12]}); install the same file on every node")
            self.model = ColorizerModel(model, provider=provider, size=size, threads=threads, temperature=temperature)
        except (*cli.MODEL_ERRORS, InputError, OSError) as error:
            self.error = f"node {self.node}: {fileio.first_line(error)}"

    def __call__(self, batch):
        import pyarrow

        schema = manifest_schema()
        rows = {column: [] for column in schema.names}
        for path, output in zip(batch.column("path").to_pylist(), batch.column("output").to_pylist()):
            status, error, milliseconds = self.colorize(path, Path(output))
            made_by = ("", "") if status == "skipped" else (self.sha256, self.node)  # the driver knows who made it
            for column, value in zip(schema.names, (path, output, status, error, milliseconds, *made_by)):
                rows[column].append(value)
        return pyarrow.table(rows, schema=schema)

    def colorize(self, path: str, target: Path) -> tuple[str, str, float]:
        """-> (status, error line, milliseconds) for one photo."""
        if target.exists():  # done by an earlier run (or by this one before a retried batch): resume
            return "skipped", "output exists", 0.0
        start = time.perf_counter()
        try:
            if self.error:
                raise InputError(self.error)
            if is_uri(path):
                with local_copy(path) as local:
                    colorize_image(self.model, local, target, False)
            else:
                colorize_image(self.model, Path(path), target, False)
        except Exception as error:  # one bad photo (decoder, disk, ONNX Runtime): its row says why, the batch goes on
            return "failed", fileio.first_line(error), (time.perf_counter() - start) * 1000.0
        return "ok", "", (time.perf_counter() - start) * 1000.0


@contextlib.contextmanager
def local_copy(uri: str):
    """A photo at a URI, copied into a local temp file with the same extension for the duration of the block."""
    import pyarrow.fs

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(uri)
    handle, name = tempfile.mkstemp(suffix=Path(inner).suffix)
    try:
        with os.fdopen(handle, "wb") as out, filesystem.open_input_stream(inner) as source:
            out.write(source.read())
        yield Path(name)
    finally:
        os.unlink(name)


def manifest_schema():
    import pyarrow

    return pyarrow.schema([("path", pyarrow.string()), ("output", pyarrow.string()), ("status", pyarrow.string()),
                           ("error", pyarrow.string()), ("milliseconds", pyarrow.float64()),
                           ("model_sha256", pyarrow.string()), ("node", pyarrow.string())])


# ---------------------------------------------------------------- the manifest

def previous_makers(manifest: Path) -> dict[str, tuple[str, str]]:
    """output -> (model sha256, node) of the outputs an earlier manifest at this path records as made."""
    import pyarrow.parquet

    try:
        rows = pyarrow.parquet.read_table(manifest, columns=["output", "status", "model_sha256", "node"]).to_pylist()
    except (OSError, ValueError, KeyError):  # none yet, or not ours: nothing to carry over
        return {}
    return {row["output"]: (row["model_sha256"], row["node"]) for row in rows
            if row["status"] in ("ok", "skipped") and row["model_sha256"]}


class Manifest:
    """Manifest rows written as they arrive into a temp file beside the target, renamed into place by commit() at
    the end (after an interrupt too, with the rows done so far): the file under the manifest's name is complete."""

    def __init__(self, target: Path):
        import pyarrow.parquet

        self.target = target
        self.temp = fileio.new_temp(target)
        self.writer = pyarrow.parquet.ParquetWriter(str(self.temp), manifest_schema())
        self.pending, self.pending_rows = [], 0
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self.first_result = None  # perf_counter() when the first row arrived
        self.made_by = previous_makers(target)

    def carry_over(self, table):
        """Skipped rows get the model and node that made their output, from the manifest this one replaces."""
        import pyarrow

        makers = [self.made_by.get(output, ("", "")) if status == "skipped" else (sha256, node)
                  for output, status, sha256, node in zip(*(table.column(name).to_pylist() for name in
                                                            ("output", "status", "model_sha256", "node")))]
        for index, name in ((0, "model_sha256"), (1, "node")):
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pyarrow.array([maker[index] for maker in makers], pyarrow.string()))
        return table

    def add(self, table) -> None:
        import pyarrow

        if self.first_result is None:
            self.first_result = time.perf_counter()
        for path, status, error in zip(*(table.column(name).to_pylist() for name in ("path", "status", "error"))):
            self.counts[status] += 1
            if status == "failed":
                print(f"error: {path}: {error}", file=sys.stderr, flush=True)
        self.pending.append(self.carry_over(table) if self.made_by else table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= MANIFEST_FLUSH_ROWS:
            self.writer.write_table(pyarrow.concat_tables(self.pending))
            self.pending, self.pending_rows = [], 0

    def add_refused(self, refused: list[tuple[str, str, str]]) -> None:
        import pyarrow

        if refused:
            paths, outputs, reasons = zip(*refused)
            count = len(refused)
            self.add(pyarrow.table({"path": paths, "output": outputs, "status": ["failed"] * count, "error": reasons,
                                    "milliseconds": [0.0] * count, "model_sha256": [""] * count,
                                    "node": [""] * count}, schema=manifest_schema()))

    def commit(self) -> None:
        import pyarrow

        try:
            if self.pending:
                self.writer.write_table(pyarrow.concat_tables(self.pending))
            self.writer.close()
        except BaseException:
            self.temp.unlink(missing_ok=True)
            raise
        fileio.commit(self.temp, self.target)

    @property
    def done(self) -> int:
        return sum(self.counts.values())


# ---------------------------------------------------------------- the driver

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray takes 127.0.0.1 as this node's address (its setting
# for laptops), so a local Ray never addresses this machine's network interface


def connect(ray, address: str | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray: at 127.0.0.1 (LOOPBACK_ONLY), no
    dashboard, a small object store. A cluster that cannot be reached exits with EXIT_USAGE."""
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            os.environ.setdefault(LOOPBACK_ONLY, "0")
            ray.init(address="local", object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False,
                     _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, OSError) as error:
        fileio.fail(f"cannot {'join the Ray cluster at ' + address if address else 'start a local Ray'}: "
                    f"{fileio.first_line(error)}", cli.EXIT_USAGE)


def actor_pool(ray, workers: int | None, threads: int, photos: int):
    """A pool of `workers` actors (default: all the cluster's CPUs), each reserving `threads` CPUs, never more than
    there are photos; one that is larger than the cluster starts with what fits and grows as an autoscaler adds
    nodes."""
    fits = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
    wanted = min(workers or fits, photos)
    return ray.data.ActorPoolStrategy(min_size=min(wanted, fits), max_size=wanted)


def model_spec(model: ColorizerModel) -> str:
    """What each actor loads: a shipped model by name (each node has its own install), any other file by its
    absolute path (the actors' working folder is not the driver's)."""
    shipped = shipped_model_path(model.path.stem)
    if shipped is not None and shipped.resolve() == model.path.resolve():
        return model.path.stem
    return str(model.path.resolve())


def colorize_all(ray, args, work: list[tuple[str, str]], sha256: str, spec: str, manifest: Manifest) -> None:
    """Stream the work through the actor pool into the manifest."""
    import pyarrow

    if not work:
        return
    table = pyarrow.table({"path": [path for path, _ in work], "output": [output for _, output in work]})
    pool = actor_pool(ray, args.workers, args.threads, len(work))
    # a block is the unit an actor is given: one batch, or fewer photos when that keeps every actor busy, and at
    # most 10 000 blocks, few enough to track
    rows = max(min(args.batch_size, -(-len(work) // pool.max_size)), -(-len(work) // 10_000))
    dataset = ray.data.from_arrow([table.slice(start, rows) for start in range(0, len(work), rows)])
    results = dataset.map_batches(
        ColorizeBatch, batch_size=args.batch_size, batch_format="pyarrow", zero_copy_batch=True,
        compute=pool, num_cpus=args.threads,
        fn_constructor_kwargs={"model": spec, "provider": args.provider, "size": args.size,
                               "temperature": args.temperature, "threads": args.threads, "expected_sha256": sha256})
    for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
        manifest.add(batch)


def remove_partials(folders: set[Path], since: float) -> int:
    """Temp files of ours in the output folders once the job is over: those written during it (its killed workers',
    from any node) and stale ones from earlier runs. Another job writing into the same folders at the same time would
    lose its temp files: one job per output folder."""
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if fileio.is_partial(entry.name) and (entry.stat().st_mtime >= since or
                                                      fileio.is_stale_partial(entry.name)):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass
    return removed


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        fileio.fail(f"output {outdir} exists and is not a folder", cli.EXIT_USAGE)
    cli.quiet_opencv()
    ray = import_ray()
    try:  # checked here, once, so that a bad model is one error line and exit 2 rather than a failed row per photo
        model = cli.load_model(args)
    except cli.MODEL_ERRORS as error:
        fileio.fail(str(error), cli.EXIT_USAGE)
    sha256, spec = file_sha256(model.path), model_spec(model)
    del model
    found, failures = find_photos(args.sources, outdir, args.recursive)
    work, refused = plan(found)
    refused = [(source, "", reason) for source, reason in failures] + refused
    outdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        connect(ray, args.address)  # before our signal handlers: ray.init installs a SIGTERM handler of its own
    except KeyboardInterrupt:
        print("interrupted while starting Ray: nothing done", file=sys.stderr, flush=True)
        return cli.EXIT_SIGINT
    return run(ray, args, work, refused, sha256, spec, start)


def run(ray, args, work: list[tuple[str, str]], refused: list[tuple[str, str, str]], sha256: str, spec: str,
        start: float) -> int:
    """Colour the work on the connected Ray, write the manifest, print the summary; -> exit status."""
    outdir = Path(args.output)
    manifest_path = Path(args.manifest) if args.manifest else outdir / "manifest.parquet"
    manifest, began = Manifest(manifest_path), time.time()
    with cli.interruptible():
        try:
            manifest.add_refused(refused)
            colorize_all(ray, args, work, sha256, spec, manifest)
        except KeyboardInterrupt as interrupt:  # the rows done so far still make a manifest; outputs are atomic
            manifest.commit()
            print(f"interrupted: {manifest.done} done, {len(work) + len(refused) - manifest.done} left; run the same "
                  "command again to resume", file=sys.stderr, flush=True)
            return cli.interrupt_code(interrupt)
        finally:
            ray.shutdown()
        manifest.commit()
    remove_partials({Path(output).parent for _, output in work}, began - 1.0)
    counts = manifest.counts
    first = f", first results after {manifest.first_result - start:.1f} s" if manifest.first_result else ""
    print(f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed in "
          f"{time.perf_counter() - start:.1f} s{first} (outputs in {outdir}, manifest {manifest_path})")
    return cli.EXIT_FAILED if counts["failed"] else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
