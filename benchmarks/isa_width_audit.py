"""Which vector registers each compiled kernel uses, per instruction-set level (issue 23, item 3).

The avx512 level must run 512-bit code where it pays.  This script disassembles the kernel
modules of one level (``fastopt/_ext/<level>/*.so``) with ``objdump`` and prints, per kernel
function (the Cython task functions and the C kernels they call), the widest vector register
its loops use, counting what the function calls (directly, inside the same module) as part of
it, so a task whose work sits in a helper is reported with the helper's width.

    python benchmarks/isa_width_audit.py                 # the avx512 level of this checkout
    python benchmarks/isa_width_audit.py --level avx2 --all

Only instructions inside a loop (between a backward jump and its target) count: set-up,
reductions of the final lanes and scalar tails use narrower registers in every build.  The
test ``tests/test_isa_width.py`` runs the same audit and fails if a kernel family's loops
narrow at the avx512 level.  Needs GNU objdump (binutils); the symbols are the module's
local symbols, which the build keeps (it does not strip).
"""

import argparse
import re
import shutil
import subprocess
from pathlib import Path

WIDTHS = ("xmm", "ymm", "zmm")
_REG = re.compile(r"%([xyz])mm\d+")
_HEAD = re.compile(r"^([0-9a-f]+) <(.+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s*(.*)$")
_JUMP = re.compile(r"^j\w+\s+([0-9a-f]+) <([^>+]+)(\+0x[0-9a-f]+)?>")
_CALL = re.compile(r"^call\w*\s+[0-9a-f]+ <([^>+@]+)>")

# The kernel families and the functions that hold their hot loops (Cython names end in these;
# C kernels are named as they are in the headers).
FAMILIES = {
    "_optim": [("dense float32", r"_(sgd|adam|adamax|nadam|radam|amsgrad|rmsprop|adagrad|lion)_task_f32$"),
               ("dense float64", r"_(sgd|adam|adamax|nadam|radam|amsgrad|rmsprop|adagrad|lion)_task_f64$"),
               ("clip / norm f32", r"_(sumsq|scale|gstats)_task_f32$"),
               ("clip / norm f64", r"_(sumsq|scale|gstats)_task_f64$")],
    "_ema": [("EMA", r"_ema_task_f(32|64)$")],
    "_batchnorm": [("batch norm", r"(_(sums|affine|dx)_task|_stats|fo_plane_sums)_f(32|64)$")],
    "_lowbit": [("bfloat16 state", r"_bf16_task$"),
                ("int8 state", r"_int8_task$"),
                ("float8 state", r"_f8_task$"),
                ("roofline (low-bit)", r"_roof_task$")],
}
# The runtime's roofline module is built once, its loops compiled per level by target attribute.
RUNTIME = {"_roofline": [("roofline", r"^fo_rl_(upd|map|sum2)_{level}$")]}


def disassemble(path):
    """Return {function: (instructions, calls)} of a shared object's text, from objdump.

    ``instructions`` is a list of (address, text); ``calls`` the names it calls directly.
    """
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "att", str(path)],
                         check=True, capture_output=True, text=True).stdout
    funcs, name = {}, None
    for line in out.splitlines():
        head = _HEAD.match(line)
        if head:
            name = head.group(2)
            funcs[name] = ([], set())
            continue
        insn = _INSN.match(line)
        if name is None or not insn:
            continue
        addr, text = int(insn.group(1), 16), insn.group(2).strip()
        funcs[name][0].append((addr, text))
        call = _CALL.match(text)
        if call:
            funcs[name][1].add(call.group(1))
    return funcs


# packed work: floating-point arithmetic on vectors, and vector loads and stores
_PACKED = re.compile(r"^v?((add|sub|mul|div|sqrt|max|min|rcp14|rsqrt14|rndscale|fn?m(add|sub)\d+)p[sd]"
                     r"|(movu|mova)p[sd]\s.*\(|movdq[au]\d*\s.*\(|cvt\w*p[sdh]2p[sdh]|p(add|sub|mul)\w+)\b")


_STOP = re.compile(r"^(jmp|ret|ud2|hlt)\b")


def loops(instructions):
    """The function's innermost loops, as (width, instructions in it).

    A loop is a natural loop of the function's control flow: a jump back to an earlier
    instruction (the header) from which the jump is reachable; its body, the instructions
    that reach the jump without passing through the header.  Innermost: no other loop's
    header in its body.  Outer loops (over blocks, over arrays) are left out: their bodies
    hold the set-up and the tails.  The width is the widest vector register the loop uses:
    'zmm', 'ymm', 'xmm', or 'scalar' when it only uses xmm registers for scalar operations
    (the scalar tail after a vector loop), or None when it uses none.
    """
    index = {addr: i for i, (addr, _) in enumerate(instructions)}
    preds = [[] for _ in instructions]
    back = {}  # header index -> indices of the jumps back to it
    for i, (addr, text) in enumerate(instructions):
        jump = _JUMP.match(text)
        if jump and int(jump.group(1), 16) in index:
            t = index[int(jump.group(1), 16)]
            preds[t].append(i)
            if t <= i:
                back.setdefault(t, []).append(i)
        if not _STOP.match(text) and i + 1 < len(instructions):
            preds[i + 1].append(i)
    bodies = {}
    for head, jumps in back.items():
        # the body: what reaches a back jump, within the loop's addresses, not through the
        # header (gcc enters a rotated loop at its test, past the header)
        last = max(jumps)
        body, todo = set(), list(jumps)
        while todo:
            i = todo.pop()
            if i not in body:
                body.add(i)
                if i != head:
                    todo.extend(j for j in preds[i] if head <= j <= last)
        if head in body:  # the header reaches the jump: a loop (else a jump into a tail)
            bodies[head] = body
    result = []
    for head, body in sorted(bodies.items()):
        if any(other != head and other in body for other in bodies):
            continue
        regs, packed_xmm = set(), False
        for i in body:
            text = instructions[i][1]
            found = {m.group(1) + "mm" for m in _REG.finditer(text)}
            regs |= found
            if found == {"xmm"} and _PACKED.match(text):
                packed_xmm = True
        width = max(regs, key=WIDTHS.index) if regs else None
        if width == "xmm" and not packed_xmm:
            width = "scalar"
        result.append((width, len(body)))
    return result


def audit_module(path):
    """{function: innermost loops of the function and of the module's functions it calls}."""
    funcs = disassemble(path)
    own = {name: loops(insns) for name, (insns, _) in funcs.items()}
    result = {}
    for name in funcs:
        seen, todo = {name}, [name]
        while todo:  # the module's functions this one reaches by direct calls
            for callee in funcs[todo.pop()][1]:
                if callee in funcs and callee not in seen:
                    seen.add(callee)
                    todo.append(callee)
        result[name] = [loop for f in sorted(seen) for loop in own[f]]
    return result


def audit_level(root, level):
    """{(module, family): {function: innermost loops}} for the kernel families of a level."""
    table = {}
    for where, groups in (("_ext/" + level, FAMILIES), (".", RUNTIME)):
        for module, families in groups.items():
            found = sorted((root / where).glob(module + ".*.so"))
            if not found:
                continue
            per_fn = audit_module(found[0])
            for family, pattern in families:
                pattern = pattern.replace("{level}", level)
                table[(module, family)] = {name: loops_ for name, loops_ in per_fn.items()
                                           if re.search(pattern, name)}
    return table


def widest(found):
    """The widest register of a function's vector loops ('xmm', 'ymm', 'zmm'), or None."""
    return max((w for w, _ in found if w in WIDTHS), key=WIDTHS.index, default=None)


def family_width(rows):
    """The narrowest over the family's functions of their widest vector loop: 'zmm' when
    every kernel of the family has a 512-bit loop."""
    widths = [widest(found) for found in rows.values()]
    if not widths or None in widths:
        return None
    return min(widths, key=WIDTHS.index)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", default="avx512")
    parser.add_argument("--root", default=None, help="the fastopt package directory "
                        "(default: the one Python imports)")
    parser.add_argument("--all", action="store_true", help="one line per function")
    args = parser.parse_args(argv)
    if shutil.which("objdump") is None:
        raise SystemExit("objdump (GNU binutils) is needed")
    if args.root is None:
        import fastopt

        args.root = Path(fastopt.__file__).parent
    table = audit_level(Path(args.root), args.level)
    print(f"{'module':<11} {'family':<19} {'width':<5} {'kernels':>7}  innermost loops: "
          "zmm ymm xmm scalar")
    for (module, family), rows in table.items():
        total = {w: sum(1 for found in rows.values() for v, _ in found if v == w)
                 for w in WIDTHS + ("scalar",)}
        counts = " ".join(f"{total[w]:>3}" for w in ("zmm", "ymm", "xmm", "scalar"))
        print(f"{module:<11} {family:<19} {family_width(rows) or '-':<5} {len(rows):>7}  "
              f"{'':16}{counts}")
        if args.all:
            for name, found in sorted(rows.items()):
                shown = " ".join(f"{w or '-'}:{n}" for w, n in found)
                print(f"    {name.split('_ext_')[-1]:<44} {widest(found) or '-':<4} {shown}")


if __name__ == "__main__":
    main()
