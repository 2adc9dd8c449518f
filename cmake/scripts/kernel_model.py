#!/usr/bin/env python3
"""The GPU decode kernel's cost model: a MODEL, never a measurement (no GPU is involved).

Joins two things a machine without a GPU can see:
  * the SASS of decode_bundle_kernel in the built sm_90 cubin (cuobjdump / nvdisasm): registers,
    spills, static shared memory, and the instructions one iteration of each hot loop issues
    (walk = phase 1, decode = phase 2, merge), found as the backward branches whose bodies carry
    the line info of walk_segment, decode_to_stage and merge_unit;
  * floatzip_gpu_model's warp-lockstep replay of the kernel's own per-thread code (JSON lines):
    warp steps, active lanes, look-ups, refills, shared-memory wavefronts.

Modeled warp instructions per value = sum over phases of warp steps x instructions per step
(a branch-guarded refill or stage store weighted by the fraction of warp steps in which any lane
takes it) + every instruction outside the phase loops once per warp and block (an upper bound of
the straight-line code) + the table copy. The bounds assume an H100 SXM / H200 (132 SMs at
1.98 GHz, 4 warp schedulers issuing one warp instruction a cycle each, one shared-memory
wavefront per SM and cycle) and copy bandwidths of 3.0 TB/s (H100, the figure DESIGN.md cites)
and 4.3 TB/s (H200: 4.8 TB/s peak scaled by the same 0.9): assumptions, printed with the table.

Usage: kernel_model.py --cuobjdump PATH --nvdisasm PATH --object FILE --source-dir DIR
                       --lockstep FILE.jsonl
The last line printed is one JSON object for the last lockstep line (the default options on the
Llama-shaped block).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

DEVICES = {
    "h100": {"sms": 132, "clock_hz": 1.98e9, "copy_bytes_per_s": 3.0e12},
    "h200": {"sms": 132, "clock_hz": 1.98e9, "copy_bytes_per_s": 4.3e12},
}
SCHEDULERS_PER_SM = 4
SHARED_PER_SM = 228 * 1024
RESERVED_SHARED_PER_BLOCK = 1024
REGISTERS_PER_SM = 65536
MAX_THREADS_PER_SM = 2048
MAX_BLOCKS_PER_SM = 32

# Loop kinds of the lockstep replay (kernel_logic.hpp's loop_kind) and the function whose loop
# each is; the first match in an instruction's inline chain wins.
PHASE_FUNCTIONS = [
    ("walk_pair", "walk_pair_steps"),
    ("walk_multi", "walk_multi_steps"),
    ("walk_single", "walk_single_steps"),
    ("decode_pair", "decode_pair_steps"),
    ("decode_multi", "decode_multi_steps"),
    ("decode_single", "decode_single_steps"),
    ("flush", "flush_stage_tail"),
    ("merge_partial", "merge_partial_unit"),
    ("merge", "merge_aligned_units"),
    ("merge_shifted", "merge_shifted_units"),
    ("table_load", "copy_block_part"),
]
LOOPS = ["walk_pair", "walk_multi", "walk_single", "decode_pair", "decode_multi",
         "decode_single", "flush", "merge", "merge_shifted", "merge_partial"]
# At most a few iterations per thread and tile, which the compiler may unroll into straight code
# (then counted with the code outside loops).
OPTIONAL_LOOPS = {"flush", "merge_partial"}
# Functions whose instructions mark a branch-guarded region: a stream refill, a stage store.
REFILL_FUNCTION = "refill"
STORE_FUNCTION = "push_exponents"
# unit_merge's value-by-value fallback of a wide merge (bf16-in-fp16's units with a symbol above
# 142): a branch-guarded region too, taken in the replay's by_traits_warp_steps. Where it lies on
# the main path instead (a format whose whole merge is value by value, or another branch layout),
# it counts in full: an upper bound.
BY_TRAITS_FUNCTION = "merge_unit_by_traits"


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def function_ranges(path):
    """{name: [(first_line, last_line)]} of the functions defined in a C++ source."""
    ranges = {}
    lines = open(path, encoding="utf-8").read().split("\n")
    names = {f for _, f in PHASE_FUNCTIONS} | {REFILL_FUNCTION, STORE_FUNCTION,
                                                BY_TRAITS_FUNCTION}
    i = 0
    while i < len(lines):
        m = re.search(r"\b(\w+)\(", lines[i])
        if m and m.group(1) in names and ("FLOATZIP_HD" in lines[i] or "__device__" in lines[i]
                                          or (i > 0 and "FLOATZIP_HD" in lines[i - 1])):
            depth, j, opened = 0, i, False
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                opened = opened or "{" in lines[j]
                if opened and depth <= 0:
                    break
                j += 1
            ranges.setdefault(m.group(1), []).append((i + 1, j + 1))
            i = j
        i += 1
    return ranges


class Instr:
    __slots__ = ("addr", "text", "opcode", "pred", "target", "funcs")

    def __init__(self, addr, text, funcs):
        self.addr, self.text, self.funcs = addr, text, funcs
        body = text
        self.pred = None
        m = re.match(r"(@!?U?P\w+)\s+(.*)", body)
        if m:
            self.pred, body = m.group(1), m.group(2)
        self.opcode = body.split()[0] if body.split() else ""
        t = re.search(r"`\(\.(L_x_\d+)\)", body)
        self.target = t.group(1) if t else None


def parse_sass(text, sources):
    """{kernel_name: (instructions, labels)} from nvdisasm -gi -c output."""
    ranges = {os.path.basename(p): function_ranges(p) for p in sources}
    kernels = {}
    current = None
    chain = []
    pending_new_chain = True
    for line in text.split("\n"):
        m = re.match(r"\.text\.(\S+):", line)
        if m:
            current = m.group(1)
            kernels[current] = ([], {})
            continue
        if current is None:
            continue
        if line.strip().startswith("//## File"):
            if pending_new_chain:
                chain = []
                pending_new_chain = False
            for f, ln in re.findall(r'"([^"]+)", line (\d+)', line):
                chain.append((os.path.basename(f), int(ln)))
            continue
        m = re.match(r"\.(L_x_\d+):", line.strip())
        if m:
            kernels[current][1][m.group(1)] = len(kernels[current][0])
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            pending_new_chain = True
            funcs = set()
            for f, ln in chain:
                for name, spans in ranges.get(f, {}).items():
                    if any(a <= ln <= b for a, b in spans):
                        funcs.add(name)
            kernels[current][0].append(Instr(int(m.group(1), 16), m.group(2), frozenset(funcs)))
    return kernels


def find_loops(instrs, labels):
    """Loops named after the phase function most of their instructions come from, leaving out
    loops that hold loops of other phases (the tile loop)."""
    spans = []
    for i, ins in enumerate(instrs):
        if ins.opcode.startswith("BRA") and ins.target in labels and labels[ins.target] <= i:
            spans.append((labels[ins.target], i))
    def phase_of(head, latch):
        votes = {}
        for x in instrs[head:latch + 1]:
            for p, f in PHASE_FUNCTIONS:
                if f in x.funcs:
                    votes[p] = votes.get(p, 0) + 1
                    break
        return max(votes, key=votes.get) if votes else "other"

    phases = {span: phase_of(*span) for span in spans}
    loops = []
    for head, latch in spans:
        inner = {phases[(h, l)] for h, l in spans
                 if h >= head and l <= latch and (h, l) != (head, latch)}
        if inner - {phases[(head, latch)]}:
            continue  # holds loops of other phases: the tile loop
        loops.append({"head": head, "latch": latch, "phase": phases[(head, latch)]})
    return loops


def is_real(ins):
    return ins.opcode not in ("NOP", "")


def path_cost(instrs, labels, loop, stats, kind):
    """Instructions one iteration issues along the loop's main path (fall-through at conditional
    branches, except forward skips of a refill (LDG) or stage store (STS) region, or of a wide
    merge's value-by-value fallback (merge_unit_by_traits), which count with the fraction of warp
    iterations that take them: the replay's warp steps with a refill, with a stage store, or with
    a fallback, spread over the regions of that kind in one iteration). Returns (instructions,
    table look-ups, 16-byte global stores, byte stage stores)."""
    head, latch = loop["head"], loop["latch"]
    cost, lookups, wide_stores, byte_stores = 0.0, 0, 0, 0
    regions = []  # (kind, instructions)
    pc = head
    guard = 0
    while pc <= latch and guard < 100000:
        guard += 1
        ins = instrs[pc]
        if not is_real(ins):
            pc += 1
            continue
        cost += 1
        if ins.opcode.startswith("LDS"):
            lookups += 1
        if ins.opcode.startswith("STG.E.128"):
            wide_stores += 1
        if ins.opcode.startswith("STS.U8"):
            byte_stores += 1
        if ins.opcode.startswith("BRA") and pc != latch and ins.target in labels:
            tgt = labels[ins.target]
            if ins.pred is None:
                if pc < tgt <= latch:
                    pc = tgt
                    continue
                break
            if pc < tgt <= latch:
                region = [x for x in instrs[pc + 1:tgt] if is_real(x)]
                region_kind = None
                if any(x.opcode.startswith("LDG") and REFILL_FUNCTION in x.funcs
                       for x in region):
                    region_kind = "refill"
                elif any(x.opcode.startswith("STS") and STORE_FUNCTION in x.funcs
                         for x in region):
                    region_kind = "store"
                elif any(BY_TRAITS_FUNCTION in x.funcs for x in region):
                    region_kind = "by_traits"
                if region_kind is not None:
                    regions.append((region_kind, len(region)))
                    lookups += sum(1 for x in region if x.opcode.startswith("LDS"))
                    # The fallback's own 16-byte store replaces the wide path's, not an extra one.
                    pc = tgt
                    continue
        pc += 1
    steps = {"merge": wide_stores, "merge_shifted": wide_stores, "flush": byte_stores,
             "merge_partial": 1, "table_load": 1}.get(kind, lookups)
    st = stats.get(kind)
    for region_kind, size in regions:
        same = sum(1 for k, _ in regions if k == region_kind)
        if st and st["warp_steps"] and steps:
            taken = (st["refill_warp_steps"] if region_kind == "refill"
                     else st["by_traits_warp_steps"] if region_kind == "by_traits"
                     else st["stage_stores"]["warp_accesses"])
            iterations = st["warp_steps"] / steps
            fraction = min(1.0, taken / (iterations * same))
        else:
            fraction = 1.0
        cost += fraction * size
    return cost, steps


def resource_usage(cuobjdump, cubin):
    usage = {}
    name = None
    for line in run([cuobjdump, "-res-usage", cubin]).split("\n"):
        m = re.search(r"Function (\S+):", line)
        if m:
            name = m.group(1)
            continue
        if name and "REG:" in line:
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            usage[name] = {k: int(v) for k, v in fields.items()}
            name = None
    return usage


def blocks_per_sm(registers, threads, shared_bytes):
    regs_per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    warps = threads // 32
    by_regs = REGISTERS_PER_SM // (regs_per_warp * warps)
    by_shared = SHARED_PER_SM // shared_bytes
    by_threads = MAX_THREADS_PER_SM // threads
    return min(by_regs, by_shared, by_threads, MAX_BLOCKS_PER_SM), {
        "registers": by_regs, "shared": by_shared, "threads": by_threads}


def model(run_stats, kernel, instrs, labels, usage):
    loops = find_loops(instrs, labels)
    stats = run_stats["loops"]
    values = run_stats["values"]
    groups = run_stats["groups"]
    threads = run_stats["threads_per_block"]
    warps_per_block = threads // 32
    in_phase_loop = set()
    per_loop = {}
    for loop in loops:
        if loop["phase"] != "other":
            in_phase_loop.update(range(loop["head"], loop["latch"] + 1))
    for kind in LOOPS + ["table_load"]:
        best = None
        for loop in (l for l in loops if l["phase"] == kind):
            cost, steps = path_cost(instrs, labels, loop, stats, kind)
            if steps == 0:
                continue
            # The loop that runs the steps: the unrolled main loop, the one with most steps.
            if best is None or steps > best["steps_per_iteration"]:
                best = {"instructions_per_iteration": cost, "steps_per_iteration": steps,
                        "instructions_per_step": cost / steps,
                        "first_address": instrs[loop["head"]].addr}
        per_loop[kind] = best
    outside = sum(1 for i, x in enumerate(instrs) if is_real(x) and i not in in_phase_loop)

    warp_instr = {}
    for kind in LOOPS:
        p = per_loop.get(kind)
        steps = stats[kind]["warp_steps"]
        if p is None and steps > 0 and kind not in OPTIONAL_LOOPS:
            raise SystemExit(f"kernel_model: no {kind} loop found in the SASS of {kernel}")
        warp_instr[kind] = steps * (p["instructions_per_step"] if p else 0)
    table_iterations = run_stats["table_load_bytes"] / (threads * 16)
    tl = per_loop.get("table_load")
    warp_instr["table_load"] = groups * warps_per_block * table_iterations * (
        tl["instructions_per_step"] if tl else 0)
    warp_instr["outside_loops"] = groups * warps_per_block * outside
    total = sum(warp_instr.values())

    def total_of(kinds, access):
        return sum(stats[k][access]["wavefronts"] for k in kinds)

    smem = {
        "table_lookups": total_of(LOOPS, "table_lookups"),
        "stage_stores": total_of(LOOPS, "stage_stores"),
        "stage_loads": total_of(LOOPS, "stage_loads"),
        # the table copy: 16-byte stores, a warp's 512 bytes in 4 wavefronts
        "table_copy": groups * run_stats["table_load_bytes"] / 128,
    }
    smem_total = sum(smem.values())
    lookups = sum(stats[k]["table_lookups"]["lane_accesses"] for k in LOOPS)
    lookup_accesses = sum(stats[k]["table_lookups"]["warp_accesses"] for k in LOOPS)
    store_accesses = sum(stats[k]["stage_stores"]["warp_accesses"] for k in LOOPS)

    u = usage.get(kernel, {})
    registers = u.get("REG", 0)
    # cuobjdump counts the 1 KiB the runtime reserves per block on sm_90 as static shared memory.
    shared = run_stats["shared_bytes_per_block"] + max(u.get("SHARED", 0),
                                                       RESERVED_SHARED_PER_BLOCK)
    occupancy, limits = blocks_per_sm(registers, threads, shared)
    spill_instructions = sum(1 for x in instrs if x.opcode.startswith(("STL", "LDL")))

    out_bytes = run_stats.get("value_bytes", 2) * values
    result = {
        "model": "MODEL, not a measurement",
        "input": run_stats["input"],
        "format": run_stats.get("format", "bf16"),
        "max_code_length": run_stats["max_code_length"],
        "chunk_bytes": run_stats["chunk_bytes"],
        "table_bits": run_stats["table_bits"],
        "kernel": kernel,
        "values": values,
        "bits_per_value": 8 * run_stats["bundle_bytes"] / values,
        "registers": registers,
        "local_bytes": u.get("LOCAL", 0),
        "spill_instructions": spill_instructions,
        "shared_bytes_per_block": shared,
        "blocks_per_sm": occupancy,
        "blocks_per_sm_limits": limits,
        "tiles_per_group": run_stats["tiles_per_group"],
        "lookups_per_value": lookups / values,
        "instructions_per_step": {k: (per_loop[k] or {}).get("instructions_per_step")
                                  for k in LOOPS},
        "steps_per_iteration": {k: (per_loop[k] or {}).get("steps_per_iteration") for k in LOOPS},
        "warp_steps_per_value": {k: stats[k]["warp_steps"] / values for k in LOOPS},
        "instructions_outside_loops": outside,
        "active_lane_fraction": {k: stats[k]["active_lane_fraction"] for k in LOOPS},
        "refill_warp_step_fraction": {
            k: stats[k]["refill_warp_steps"] / stats[k]["warp_steps"]
            if stats[k]["warp_steps"] else 0 for k in LOOPS},
        "by_traits_warp_step_fraction": {
            k: stats[k].get("by_traits_warp_steps", 0) / stats[k]["warp_steps"]
            if stats[k]["warp_steps"] else 0 for k in ("merge", "merge_shifted")},
        "lookup_wavefronts_per_access": smem["table_lookups"] / max(1, lookup_accesses),
        "store_wavefronts_per_access": smem["stage_stores"] / max(1, store_accesses),
        "warp_instructions_per_value_by_part": {k: v / values for k, v in warp_instr.items()},
        "smem_wavefronts_per_value_by_part": {k: v / values for k, v in smem.items()},
        "warp_instructions_per_value": total / values,
        "smem_wavefronts_per_value": smem_total / values,
    }
    for name, d in DEVICES.items():
        issue = d["sms"] * SCHEDULERS_PER_SM * d["clock_hz"] / (total / values) * 2
        shared_bound = d["sms"] * d["clock_hz"] / (smem_total / values) * 2
        memory = d["copy_bytes_per_s"] * out_bytes / (run_stats["bundle_bytes"] + out_bytes)
        result[f"issue_bound_tbps_{name}"] = issue / 1e12
        result[f"smem_bound_tbps_{name}"] = shared_bound / 1e12
        result[f"memory_bound_tbps_{name}"] = memory / 1e12
    return result


def print_table(r):
    print(f"\n== {r['input']} {r['format']}: max_code_length {r['max_code_length']}, chunk_bytes "
          f"{r['chunk_bytes']}, {r['table_bits']}-bit table  (MODEL, not a measurement)")
    print(f"  registers {r['registers']}, local (spill) bytes {r['local_bytes']}, spill instructions "
          f"{r['spill_instructions']}, shared/block {r['shared_bytes_per_block']} B, blocks/SM "
          f"{r['blocks_per_sm']} {r['blocks_per_sm_limits']}, tiles/group {r['tiles_per_group']:.2f}")
    print(f"  {'loop':<14}{'instr/step':>11}{'steps/iter':>11}{'active lanes':>13}"
          f"{'warp steps/value':>17}{'warp instr/value':>18}")
    for p in LOOPS:
        ips = r["instructions_per_step"][p]
        spi = r["steps_per_iteration"][p]
        print(f"  {p:<14}{(ips or 0):>11.2f}{(spi or 0):>11}{r['active_lane_fraction'][p]:>13.3f}"
              f"{r['warp_steps_per_value'][p]:>17.4f}"
              f"{r['warp_instructions_per_value_by_part'][p]:>18.3f}")
    for p in ("table_load", "outside_loops"):
        print(f"  {p:<66}{r['warp_instructions_per_value_by_part'][p]:>18.3f}")
    print(f"  {'total':<66}{r['warp_instructions_per_value']:>18.3f}")
    print(f"  look-ups/value {r['lookups_per_value']:.3f}; wavefronts per warp access: look-ups "
          f"{r['lookup_wavefronts_per_access']:.2f}, stage stores "
          f"{r['store_wavefronts_per_access']:.2f}; refill warp-step fraction "
          + ", ".join(f"{k} {v:.2f}" for k, v in r["refill_warp_step_fraction"].items() if v)
          + "; value-by-value fallback warp-step fraction "
          + ", ".join(f"{k} {v:.4f}" for k, v in r["by_traits_warp_step_fraction"].items()))
    parts = ", ".join(f"{k} {v:.4f}" for k, v in r["smem_wavefronts_per_value_by_part"].items())
    print(f"  smem wavefronts/value {r['smem_wavefronts_per_value']:.4f} ({parts})")
    for d in DEVICES:
        print(f"  {d.upper()}: issue-bound {r[f'issue_bound_tbps_{d}']:.2f} TB/s, smem-bound "
              f"{r[f'smem_bound_tbps_{d}']:.2f} TB/s, memory-bound {r[f'memory_bound_tbps_{d}']:.2f}"
              f" TB/s of {r['format']} output ({r['bits_per_value']:.2f} bits read per value)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cuobjdump", required=True)
    ap.add_argument("--nvdisasm", required=True)
    ap.add_argument("--object", required=True)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--lockstep", required=True)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.cuobjdump, "-xelf", "all", os.path.abspath(args.object)], cwd=tmp,
                       check=True, capture_output=True)
        cubins = [f for f in os.listdir(tmp) if f.endswith(".cubin") and "sm_90" in f]
        if not cubins:
            raise SystemExit("kernel_model: no sm_90 cubin in " + args.object +
                             " (configure with CMAKE_CUDA_ARCHITECTURES including 90)")
        cubin = os.path.join(tmp, cubins[0])
        usage = resource_usage(args.cuobjdump, cubin)
        sass = run([args.nvdisasm, "-gi", "-c", cubin])
    sources = [os.path.join(args.source_dir, "include/floatzip/detail/kernel_logic.hpp"),
               os.path.join(args.source_dir, "cuda/decode_kernel.cuh")]
    kernels = parse_sass(sass, sources)

    runs = [json.loads(l) for l in open(args.lockstep) if l.strip().startswith("{")]
    if not runs:
        raise SystemExit("kernel_model: no lockstep results")
    print("floatzip GPU decode kernel: cost MODEL (SASS + warp-lockstep replay), not a measurement")
    print("assumptions: " + ", ".join(
        f"{k.upper()} {v['sms']} SMs at {v['clock_hz'] / 1e9:.2f} GHz, {SCHEDULERS_PER_SM} "
        f"schedulers, copy {v['copy_bytes_per_s'] / 1e12:.1f} TB/s" for k, v in DEVICES.items()))
    results = []
    for rs in runs:
        # decode_bundle_kernel<value_format F, int TableBits, int Threads>: the run's format
        # (its number, value_format.hpp; BF16 = 0 for runs that do not say) and table width.
        pattern = (f"decode_bundle_kernelILNS_12value_formatE{rs.get('format_id', 0)}E"
                   f"Li{rs['table_bits']}E")
        names = [k for k in kernels if pattern in k]
        if not names:
            raise SystemExit(f"kernel_model: no kernel matching {pattern} in the cubin")
        instrs, labels = kernels[names[0]]
        r = model(rs, names[0], instrs, labels, usage)
        for key in ("warp_instructions_per_value", "smem_wavefronts_per_value",
                    "issue_bound_tbps_h100"):
            if not (math.isfinite(r[key]) and r[key] > 0):
                raise SystemExit(f"kernel_model: {key} = {r[key]} is not a positive finite figure")
        results.append(r)
        print_table(r)
    last = results[-1]
    keys = ["model", "input", "format", "max_code_length", "chunk_bytes", "table_bits", "registers",
            "local_bytes", "shared_bytes_per_block", "blocks_per_sm", "tiles_per_group",
            "lookups_per_value", "warp_instructions_per_value", "smem_wavefronts_per_value",
            "issue_bound_tbps_h100", "smem_bound_tbps_h100", "memory_bound_tbps_h100",
            "issue_bound_tbps_h200", "smem_bound_tbps_h200", "memory_bound_tbps_h200"]
    print(json.dumps({k: last[k] for k in keys}))


if __name__ == "__main__":
    main()
