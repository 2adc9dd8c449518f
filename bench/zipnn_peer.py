"""ZipNN's C calls on the BF16 data of a safetensors file: the peer of bench_user_paths.cpp.

    python zipnn_peer.py FILE.safetensors [--threads 1 2]

Prints one line per measurement, "name seconds", for floatzip_bench_user_paths --peer:
compress/tN and decompress/tN, one call each over the whole data section (ZipNN's best case:
one large buffer), threads N. The decompressed bytes are checked against the input once.
Needs zipnn (pip install zipnn==0.5.4) in the interpreter that runs it; not part of CI.
"""
import argparse
import json
import struct
import time

from zipnn import ZipNN


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with open(args.file, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert all(v["dtype"] == "BF16" for k, v in header.items() if k != "__metadata__")
    data = memoryview(raw)[8 + header_len :]
    for threads in args.threads:
        znn = ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=threads)
        # zipnn 0.5.4's compress regroups the bytes of its input in place (even of a bytes
        # object): it gets a copy, made before the clock starts.
        scratch = bytearray(data)
        t0 = time.perf_counter()
        compressed = znn.compress(scratch)
        t1 = time.perf_counter()
        restored = znn.decompress(compressed)
        t2 = time.perf_counter()
        if restored != data:
            raise SystemExit("zipnn: decompressed bytes differ from the input")
        print(f"compress/t{threads} {t1 - t0:.6f}")
        print(f"decompress/t{threads} {t2 - t1:.6f}")


if __name__ == "__main__":
    main()
