#!/usr/bin/env python3
"""Renders the dashboard's panels to a PNG from a real Prometheus, without Grafana.

Every panel of provisiond.json is drawn where Grafana would put it (same 24-column grid), from
the same PromQL, evaluated by Prometheus's query_range API over the given window. README.md's
monitoring screenshot is made with it (see README.md, section Monitoring).

  render.py --prometheus http://127.0.0.1:9090 --minutes 10 --out dashboard.png
Needs matplotlib (pip install matplotlib).
"""
import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNIT_SCALE = {"bytes": (1 / 2**20, "MiB"), "s": (1000, "ms"), "percentunit": (100, "%")}


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as reply:
        body = json.load(reply)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    out = fmt or ""
    for key, value in metric.items():
        out = out.replace("{{" + key + "}}", value)
    return out.replace("{{", "").replace("}}", "") or "value"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--dashboard", default=os.path.join(os.path.dirname(__file__), "provisiond.json"))
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate-interval", default="30s", help="what $__rate_interval stands for")
    parser.add_argument("--end", type=float, help="Unix time the window ends at (default: now)")
    parser.add_argument("--out", default="dashboard.png")
    args = parser.parse_args()

    dashboard = json.load(open(args.dashboard))
    end = args.end or time.time()
    start = end - args.minutes * 60
    step = max(2, int(args.minutes * 60 / 150))
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.42
    fig = plt.figure(figsize=(24, rows * unit_h), facecolor="#111217")
    fig.suptitle(f'{dashboard["title"]} — last {args.minutes:g} minutes (rendered from Prometheus)',
                 color="white", fontsize=16, y=0.995)
    for panel in panels:
        g = panel["gridPos"]
        left, width = g["x"] / 24, g["w"] / 24
        bottom, height = 1 - (g["y"] + g["h"]) / rows, g["h"] / rows
        if panel["type"] == "row":
            fig.text(left + 0.005, bottom + height / 2, panel["title"], color="#ccccdc",
                     fontsize=13, weight="bold", va="center")
            continue
        ax = fig.add_axes([left + 0.03, bottom + 0.012, width - 0.04, height - 0.04], facecolor="#181b1f")
        ax.set_title(panel["title"], color="#ccccdc", fontsize=11, loc="left")
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        scale, suffix = UNIT_SCALE.get(unit, (1, {"reqps": "req/s", "ops": "/s"}.get(unit, "")))
        last = None
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", args.rate_interval)
                    .replace('"$instance"', '".*"'))
            for series in query_range(args.prometheus, expr, start, end, step):
                xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                ys = [float(v) * scale if v not in ("NaN", "+Inf", "-Inf") else float("nan")
                      for _, v in series["values"]]
                ax.plot(xs, ys, linewidth=1.4, label=legend(target.get("legendFormat"), series["metric"]))
                last = ys[-1] if ys else last
        if panel["type"] == "stat":
            ax.clear()
            ax.set_facecolor("#181b1f")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(panel["title"], color="#ccccdc", fontsize=11, loc="left")
            text = "no data" if last is None else f"{last:,.1f} {suffix}".strip()
            ax.text(0.5, 0.45, text, color="#73bf69", fontsize=26, ha="center", va="center",
                    transform=ax.transAxes)
            continue
        ax.set_ylabel(suffix, color="#9fa7b3", fontsize=8)
        ax.set_xlabel("minutes ago", color="#9fa7b3", fontsize=8)
        ax.grid(color="#2c3235", linewidth=0.5)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left", facecolor="#181b1f", labelcolor="#ccccdc",
                      edgecolor="#2c3235", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", color="#9fa7b3", ha="center", transform=ax.transAxes)
    fig.savefig(args.out, dpi=70, facecolor=fig.get_facecolor())
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
