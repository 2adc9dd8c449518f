"""floatzip against ZipNN and zstd on the same files, contenders interleaved. See README.md.

Run through run.sh, which makes the virtual environment this needs.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import zstandard
from zipnn import ZipNN
import importlib.metadata

ZSTD_19_PREFIX = 32 << 20  # zstd -19 runs at ~2 MB/s here: bigger files are measured on a prefix


# The float dtypes floatzip codes, their bytes per value, and ZipNN's name for them.
FLOAT_DTYPES = {"BF16": (2, "bfloat16"), "F16": (2, "float16"), "F32": (4, "float32"),
                "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2")}


def float_values(path):
    """(float values, the dtype holding most of the file's bytes) of a safetensors file: the
    values bits per value are counted over, and the dtype ZipNN is told the bytes are."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    values = 0
    bytes_of = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in FLOAT_DTYPES:
            continue
        begin, end = info["data_offsets"]
        values += (end - begin) // FLOAT_DTYPES[info["dtype"]][0]
        bytes_of[info["dtype"]] = bytes_of.get(info["dtype"], 0) + end - begin
    return values, (max(bytes_of, key=bytes_of.get) if bytes_of else None)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class Floatzip:
    name = "floatzip"

    def __init__(self, binary):
        self.binary = binary

    def file_compress(self, src, dst, threads):
        subprocess.run([self.binary, "compress", src, "-o", dst, "--force", "--threads",
                        str(threads)], check=True, stdout=subprocess.DEVNULL)

    def file_decompress(self, src, dst, threads):
        subprocess.run([self.binary, "decompress", src, "-o", dst, "--force", "--threads",
                        str(threads)], check=True, stdout=subprocess.DEVNULL)

    def memory(self, src, threads):
        """(compress GB/s, decompress GB/s) of the codec in memory, from `floatzip bench`."""
        out = subprocess.run([self.binary, "bench", src, "--threads", str(threads), "--repeat",
                              "1"], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
            if m and int(m.group(1)) == threads:
                return float(m.group(2)), float(m.group(3))
        raise RuntimeError("floatzip bench printed no line for %d threads:\n%s" % (threads, out))


class ZipNNContender:
    """ZipNN on the whole file's bytes, told the file's (main) float dtype."""

    def __init__(self, name, chunk, dtype):
        self.name = name
        self.chunk = chunk
        self.dtype = dtype

    def codec(self, threads):
        return ZipNN(bytearray_dtype=self.dtype, input_format="byte", threads=threads,
                     compression_chunk=self.chunk)

    def compress(self, data, threads):
        # ZipNN's compress rewrites the caller's buffer in place (it byte-groups a writable
        # input), so every call gets a fresh copy, made outside the timed region.
        return self.codec(threads).compress(bytearray(data))

    def decompress(self, blob, threads):
        return self.codec(threads).decompress(blob)


class ZstdContender:
    def __init__(self, level):
        self.level = level
        self.name = "zstd -%d" % level

    def compress(self, data, threads):
        params = zstandard.ZstdCompressionParameters.from_level(self.level, threads=threads
                                                                if threads > 1 else 0)
        return zstandard.ZstdCompressor(compression_params=params).compress(data)

    def decompress(self, blob, threads):
        return zstandard.ZstdDecompressor().decompress(blob)

    def file_compress(self, src, dst, threads):
        subprocess.run(["zstd", "-q", "-f", "-%d" % self.level, "-T%d" % threads, src, "-o",
                        dst], check=True)

    def file_decompress(self, src, dst, threads):
        subprocess.run(["zstd", "-q", "-f", "-d", src, "-o", dst], check=True)


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def measure_file(path, args, work):
    data = open(path, "rb").read()
    size = len(data)
    values, dtype = float_values(path)
    zipnn_dtype = FLOAT_DTYPES[dtype][1] if dtype else "bfloat16"  # no floats: its default
    fz = Floatzip(args.floatzip)
    contenders = [fz, ZipNNContender("ZipNN default (256 KiB)", 256 * 1024, zipnn_dtype),
                  ZipNNContender("ZipNN 32 KiB chunks", 32 * 1024, zipnn_dtype),
                  ZstdContender(1), ZstdContender(19)]
    rows = {c.name: {"sizes": [], "roundtrip": True, "note": "",
                     "mem_c": {}, "mem_d": {}, "file_c": {}, "file_d": {}} for c in contenders}
    zstd19_prefix = size > ZSTD_19_PREFIX
    fzip_path = os.path.join(work, "x.fzip")
    back_path = os.path.join(work, "x.back")
    for rep in range(args.reps):
        # Interleave: the order of contenders rotates each repetition.
        order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
        for threads in args.threads:
            for c in order:
                r = rows[c.name]
                if isinstance(c, Floatzip):
                    tc, _ = timed(lambda: c.file_compress(path, fzip_path, threads))
                    td, _ = timed(lambda: c.file_decompress(fzip_path, back_path, threads))
                    stored = os.path.getsize(fzip_path)
                    same = filecmp_bytes(back_path, data)
                    mc, md = c.memory(path, threads)
                    r["mem_c"].setdefault(threads, []).append(mc)
                    r["mem_d"].setdefault(threads, []).append(md)
                    r["note"] = ("in memory: the codec on the coded bundles (`floatzip bench`), "
                                 "decoding into a reused buffer")
                    src_bytes = size
                else:
                    src = data
                    if isinstance(c, ZstdContender) and c.level == 19 and zstd19_prefix:
                        src = data[:ZSTD_19_PREFIX]
                        r["note"] = "measured on the first %d MiB" % (ZSTD_19_PREFIX >> 20)
                    tc, blob = timed(lambda: c.compress(src, threads))
                    td, back = timed(lambda: c.decompress(blob, threads))
                    stored = len(blob)
                    same = bytes(back) == src
                    r["mem_c"].setdefault(threads, []).append(len(src) / tc / 1e9)
                    r["mem_d"].setdefault(threads, []).append(len(src) / td / 1e9)
                    src_bytes = len(src)
                    if isinstance(c, ZstdContender) and src is data:
                        zpath = os.path.join(work, "x.zst")
                        tc, _ = timed(lambda: c.file_compress(path, zpath, threads))
                        td, _ = timed(lambda: c.file_decompress(zpath, back_path, threads))
                        same = same and filecmp_bytes(back_path, data)
                    elif isinstance(c, ZipNNContender):
                        # File to file: read, compress, write; read, decompress, write.
                        zpath = os.path.join(work, "x.znn")

                        def zc():
                            with open(path, "rb") as f:
                                blob2 = c.compress(f.read(), threads)
                            with open(zpath, "wb") as f:
                                f.write(blob2)

                        def zd():
                            with open(zpath, "rb") as f:
                                out = c.decompress(f.read(), threads)
                            with open(back_path, "wb") as f:
                                f.write(out)

                        tc, _ = timed(zc)
                        td, _ = timed(zd)
                        same = same and filecmp_bytes(back_path, data)
                    else:
                        tc = td = float("nan")
                if tc == tc:
                    r["file_c"].setdefault(threads, []).append(src_bytes / tc / 1e9)
                    r["file_d"].setdefault(threads, []).append(src_bytes / td / 1e9)
                r["sizes"].append(stored / src_bytes)
                r["roundtrip"] = r["roundtrip"] and same
    return {"file": path, "bytes": size, "float_values": values, "dtype": dtype,
            "zipnn_dtype": zipnn_dtype, "rows": rows, "order": [c.name for c in contenders]}


def filecmp_bytes(path, data):
    with open(path, "rb") as f:
        return f.read() == data


def fmt_speed(xs, base):
    """Median GB/s and the median of per-repetition ratios to floatzip's figure."""
    if not xs:
        return "—"
    m = median(xs)
    if base is None or base is xs:
        return "%.2f" % m
    ratios = [x / b for x, b in zip(xs, base)]
    return "%.2f (%.2fx)" % (m, median(ratios))


def report(results, args):
    lines = []
    for res in results:
        name = os.path.basename(res["file"])
        lines.append("\n### %s (%d bytes, %d float values, mostly %s; ZipNN told %s)\n"
                     % (name, res["bytes"], res["float_values"], res["dtype"],
                        res["zipnn_dtype"]))
        head = "| contender | ratio | bits/value |"
        sep = "|---|---|---|"
        for t in args.threads:
            head += " mem c %d | mem d %d | file c %d | file d %d |" % (t, t, t, t)
            sep += "---|---|---|---|"
        head += " round trip |"
        sep += "---|"
        lines += [head, sep]
        fz = res["rows"]["floatzip"]
        for cname in res["order"]:
            r = res["rows"][cname]
            ratio = median(r["sizes"])
            bits = ratio * res["bytes"] * 8 / res["float_values"] if res["float_values"] else 0
            row = "| %s | %.4f | %.3f |" % (cname, ratio, bits)
            for t in args.threads:
                for key in ("mem_c", "mem_d", "file_c", "file_d"):
                    xs = r[key].get(t, [])
                    base = fz[key].get(t) if cname != "floatzip" else None
                    row += " %s |" % fmt_speed(xs, base)
            row += " %s |" % ("exact" if r["roundtrip"] else "**DIFFERS**")
            lines.append(row)
        notes = ["%s: %s" % (c, res["rows"][c]["note"]) for c in res["order"]
                 if res["rows"][c]["note"]]
        if notes:
            lines.append("\n" + "; ".join(notes) + ".")
    return "\n".join(lines)


def summary(results):
    """One line per file: floatzip against ZipNN's best setting of the same run."""
    lines = ["| file | dtype | floatzip | ZipNN best (setting) | floatzip / ZipNN best |",
             "|---|---|---|---|---|"]
    for res in results:
        fz = median(res["rows"]["floatzip"]["sizes"])
        zipnn = {c: median(res["rows"][c]["sizes"]) for c in res["order"] if c.startswith("ZipNN")}
        best = min(zipnn, key=zipnn.get)
        lines.append("| %s | %s | %.4f | %.4f (%s) | %.4f |" % (
            os.path.basename(res["file"]), res["dtype"], fz, zipnn[best], best, fz / zipnn[best]))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("files", nargs="*")
    p.add_argument("--floatzip", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--llama-mb", type=int, default=256,
                   help="size of the generated Llama-shaped checkpoint (0: none)")
    p.add_argument("--json", help="write the raw measurements here")
    p.add_argument("--format-files",
                   help="floatzip_format_files: also measure the BF16-in-F32 and FP8 files it "
                        "makes from the models (default: when no FILE is given)")
    args = p.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    files = list(args.files)
    models = os.environ.get("FLOATZIP_MODELS_DIR", os.path.join(args.root, "..", "shared",
                                                                 "models"))
    work = tempfile.mkdtemp(prefix="floatzip-peers.")
    try:
        if not files and os.path.isdir(models):
            files = sorted(os.path.join(models, f) for f in os.listdir(models)
                           if f.endswith(".safetensors")
                           and float_values(os.path.join(models, f))[0])
            if args.format_files:
                made = subprocess.run([args.format_files, models, os.path.join(work, "formats")],
                                      check=True, capture_output=True, text=True).stdout.split()
                files += sorted(f for f in made if not f.endswith(".mixed.safetensors"))
        if args.llama_mb > 0:
            keep = os.path.join(work, "llama")
            subprocess.run([args.floatzip, "demo", "--size-mb", str(args.llama_mb), "--keep",
                            keep], check=True, stdout=subprocess.DEVNULL)
            files.append(os.path.join(keep, "llama.safetensors"))
            if args.format_files and not args.files:
                # The same weights in the other formats (F16 and FP8 rounded from them, BF16
                # widened to F32): bigger inputs for the speeds of every format.
                os.symlink(files[-1], os.path.join(keep, "llama.bf16.safetensors"))
                made = subprocess.run([args.format_files, keep, os.path.join(work, "llama-formats")],
                                      check=True, capture_output=True, text=True).stdout.split()
                files += sorted(made)
        results = []
        for f in files:
            print("measuring %s ..." % f, file=sys.stderr, flush=True)
            results.append(measure_file(f, args, work))
        print("floatzip peers: %s, %s, %d CPUs; ZipNN %s, zstandard %s (libzstd %s); "
              "%d repetitions, medians; (Nx) = median of per-repetition ratios to floatzip"
              % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), platform.processor() or
                 platform.machine(), os.cpu_count(), importlib.metadata.version("zipnn"),
                 zstandard.__version__, ".".join(map(str, zstandard.backend_features and
                                                      zstandard.ZSTD_VERSION or ())),
                 args.reps))
        print("columns: whole-file ratio; bits per float value (whole output / float values); "
              "GB/s of original bytes: mem = in memory, file = file to file, c/d = compress/"
              "decompress, N = threads")
        print(report(results, args))
        print("\n### floatzip against ZipNN's best setting (whole-file ratios, medians)\n")
        print(summary(results))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
