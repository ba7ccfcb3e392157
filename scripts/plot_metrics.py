#!/usr/bin/python3
"""Plots of mor-dist training metrics (the JSON lines of `--train.metrics FILE`).

    /usr/bin/python3 scripts/plot_metrics.py run.jsonl [other.jsonl ...] --out plots/

writes into the --out folder (created if missing):
    loss.png          training loss (total) and validation loss over steps
    lr.png            learning rate
    grad_norm.png     global gradient norm (before clipping)
    tokens_per_s.png  training throughput
    depth.png         share of tokens at each final recursion depth (one panel per run)
    overview.png      all of the above on one page
Several files are overlaid, each labelled by its file name. Records without a field, or with
`null` / NaN / inf in it, are left out of that plot only; lines that are not JSON are skipped with
a warning. A run that was resumed logs some steps again: the last record of a step counts.

Needs matplotlib (Debian: apt-get install python3-matplotlib; it runs with /usr/bin/python3).
Exit status: 0 written, 1 nothing to plot, 2 bad arguments or unreadable file, 3 no matplotlib.
"""
import argparse
import json
import math
import os
import sys

SERIES = [  # (file stem, field, y label, title)
    ("lr", "lr", "learning rate", "Learning rate"),
    ("grad_norm", "grad_norm", "gradient norm", "Gradient norm (before clipping)"),
    ("tokens_per_s", "tokens_per_s", "tokens / s", "Throughput"),
]


def number(v):
    """A finite float, or None for anything else (missing, null, NaN, inf, strings, bools)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def load(path):
    """{'train': {step: record}, 'val': {step: val_loss}} of one metrics file."""
    train, val = {}, {}
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                if bad <= 3:
                    print(f"plot_metrics: {path}:{lineno}: not JSON, skipped", file=sys.stderr)
                continue
            if not isinstance(rec, dict):
                continue
            step = number(rec.get("step"))
            if step is None:
                continue
            step = int(step)
            if "val_loss" in rec and "loss" not in rec:
                v = number(rec.get("val_loss"))
                if v is not None:
                    val[step] = v
            else:
                train[step] = rec  # a resumed run logs a step again: the last one counts
    if bad > 3:
        print(f"plot_metrics: {path}: {bad} lines were not JSON", file=sys.stderr)
    return {"train": train, "val": val}


def xy(records, field):
    xs, ys = [], []
    for step in sorted(records):
        y = number(records[step].get(field))
        if y is not None:
            xs.append(step)
            ys.append(y)
    return xs, ys


def depth_shares(records):
    """Steps and, per depth d, the share of tokens whose final depth was d (depth_tokens)."""
    steps, rows = [], []
    for step in sorted(records):
        counts = records[step].get("depth_tokens")
        if not isinstance(counts, list) or not counts:
            continue
        vals = [number(c) for c in counts]
        if any(v is None or v < 0 for v in vals) or sum(vals) <= 0:
            continue
        total = sum(vals)
        steps.append(step)
        rows.append([v / total for v in vals])
    if not rows:
        return [], {}
    width = max(len(r) for r in rows)
    rows = [r + [0.0] * (width - len(r)) for r in rows]
    # depth 0 exists only with a first capacity below 1: leave it out when it never occurs
    return steps, {d: [r[d] for r in rows] for d in range(width) if d > 0 or any(r[0] > 0 for r in rows)}


def plot_loss(ax, runs):
    drawn = False
    for i, (label, data) in enumerate(runs):
        color = f"C{i % 10}"
        xs, ys = xy(data["train"], "loss")
        if xs:
            ax.plot(xs, ys, color=color, lw=1.2, label=f"{label} train")
            drawn = True
        vs = sorted(data["val"].items())
        if vs:
            ax.plot([s for s, _ in vs], [v for _, v in vs], color=color, lw=1.2, ls="--", marker="o", ms=3,
                    label=f"{label} val")
            drawn = True
    ax.set_title("Loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    return drawn


def plot_series(ax, runs, field, ylabel, title):
    drawn = False
    for i, (label, data) in enumerate(runs):
        xs, ys = xy(data["train"], field)
        if xs:
            ax.plot(xs, ys, color=f"C{i % 10}", lw=1.2, marker="." if len(xs) < 40 else None, label=label)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return drawn


def plot_depth(ax, label, data, legend=True):
    steps, shares = depth_shares(data["train"])
    if not steps:
        return False
    depths = sorted(shares)
    ax.stackplot(steps, [[100 * s for s in shares[d]] for d in depths], labels=[f"depth {d}" for d in depths],
                 colors=[f"C{(d + 2) % 10}" for d in depths], alpha=0.85)
    ax.set_ylim(0, 100)
    ax.set_xlim(steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1)
    ax.set_title(f"Recursion depth: {label}")
    ax.set_xlabel("step")
    ax.set_ylabel("% of tokens")
    if legend:
        ax.legend(loc="lower left", fontsize="small", framealpha=0.8)
    return True


def finish(ax, drawn, legend=True):
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    elif legend:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Writes loss.png, lr.png, grad_norm.png, tokens_per_s.png, depth.png and "
                                        "overview.png into --out.")
    ap.add_argument("files", nargs="+", help="metrics JSON-lines files (--train.metrics)")
    ap.add_argument("--out", default="plots", help="output folder (default: plots)")
    ap.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs (default: 100)")
    args = ap.parse_args(argv)

    runs = []
    names = [os.path.basename(p) for p in args.files]
    for path, name in zip(args.files, names):
        label = path if names.count(name) > 1 else name
        try:
            data = load(path)
        except OSError as e:
            print(f"plot_metrics: cannot read {path}: {e.strerror}", file=sys.stderr)
            return 2
        if not data["train"] and not data["val"]:
            print(f"plot_metrics: {path}: no metrics records", file=sys.stderr)
        runs.append((label, data))
    if not any(d["train"] or d["val"] for _, d in runs):
        print("plot_metrics: nothing to plot", file=sys.stderr)
        return 1

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_metrics: needs matplotlib (Debian: apt-get install python3-matplotlib; run it with /usr/bin/python3)",
              file=sys.stderr)
        return 3

    os.makedirs(args.out, exist_ok=True)
    written = []

    def save(fig, stem):
        path = os.path.join(args.out, stem + ".png")
        fig.tight_layout()
        fig.savefig(path, dpi=args.dpi)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    finish(ax, plot_loss(ax, runs))
    save(fig, "loss")
    for stem, field, ylabel, title in SERIES:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        finish(ax, plot_series(ax, runs, field, ylabel, title))
        save(fig, stem)
    with_depth = [(label, data) for label, data in runs if depth_shares(data["train"])[0]]
    if with_depth:
        fig, axes = plt.subplots(len(with_depth), 1, figsize=(8, 3.2 * len(with_depth)), squeeze=False)
        for ax, (label, data) in zip(axes[:, 0], with_depth):
            plot_depth(ax, label, data)
        save(fig, "depth")
    else:
        print("plot_metrics: no depth_tokens in any file: depth.png not written", file=sys.stderr)

    # the overview: loss, lr, grad norm, throughput, and the first run's depth shares
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    finish(axes[0, 0], plot_loss(axes[0, 0], runs))
    for ax, (stem, field, ylabel, title) in zip([axes[0, 1], axes[1, 0], axes[1, 1]], SERIES):
        finish(ax, plot_series(ax, runs, field, ylabel, title))
    if with_depth:
        plot_depth(axes[0, 2], with_depth[0][0], with_depth[0][1])
        axes[0, 2].grid(alpha=0.3)
    else:
        finish(axes[0, 2], False)
        axes[0, 2].set_title("Recursion depth")
    if len(with_depth) > 1:
        plot_depth(axes[1, 2], with_depth[1][0], with_depth[1][1])
        axes[1, 2].grid(alpha=0.3)
    else:
        axes[1, 2].axis("off")
    save(fig, "overview")
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
