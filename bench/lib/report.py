"""Ratios, the printed table, and the SVG chart of a bench result."""
import statistics

FIGURES = ["rps", "p50_ms", "p99_ms", "cold_rps", "cold_p99_ms", "bulk_mb_s", "upload_mb_s"]
LOWER_IS_BETTER = {"p50_ms", "p99_ms", "cold_p99_ms"}

# (row, baseline) pairs reported as ratios; a pair is skipped when either row was not measured.
COMPARISONS = [("warren", "classic"), ("warren_tls", "classic_tls"), ("warren", "raw_sshd"),
               ("warren", "sandhole"), ("warren_tls", "sandhole_tls"), ("warren", "direct"),
               # A tunnel behind basic auth against the open one, same broker, same run (target >= 0.95).
               ("warren_auth", "warren"),
               # A second open tunnel on the same broker: the A/A spread of such pairs.
               ("warren_twin", "warren"),
               # What recording each request in the tunnel's request log costs (same build).
               ("warren", "warren_nolog"),
               # The cross-node hop: the tunnel held on node 1, reached through node 2 against
               # directly, both on one Postgres (targets >= 0.8 req/s, >= 0.9 MB/s).
               ("warren_hop", "warren_pg"),
               # What sending each request's log entry to the holding node costs: the same hop
               # through a third node that records none (`request_log_entries = 0`).
               ("warren_hop", "warren_hop_nolog"),
               # The same tunnel through HAProxy in TCP mode (no TLS, no HTTP) against directly:
               # what one more process passing the bytes costs on this box, the floor under any
               # hop measured here (the cross-node hop adds TLS at both ends).
               ("warren_lb", "warren"),
               # Visitors through HAProxy naming each with a PROXY v2 header, against HAProxy
               # passing bytes as they come: what reading the header costs.
               ("warren_lb_proxy", "warren_lb"),
               # Visitor load spread over 100 live tunnels against the same load on one.
               ("warren_spread", "warren")]


def ratios(result):
    P = result["paths"]
    out = {}
    for a, b in COMPARISONS:
        if a in P and b in P:
            out[f"{a}_vs_{b}"] = {k: round(P[a][k] / P[b][k], 3) if P[b].get(k) else None for k in FIGURES}
            # The same ratio taken round by round (the two rows measured minutes apart at
            # most, in alternating order), then the median: the machine's drift over the run
            # cancels, which a ratio of two medians does not do.
            sa, sb = P[a]["samples"]["load"], P[b]["samples"]["load"]
            paired = [x["rps"] / y["rps"] for x, y in zip(sa, sb) if y["rps"]]
            if paired:
                out[f"{a}_vs_{b}"]["rps_paired"] = round(statistics.median(paired), 3)
    # The server's own CPU per GiB moved (broker against sandhole's process).
    gib = result.get("cpu_s_per_gib", {})
    for what in gib:
        w, sh = gib[what].get("warren", {}).get("broker"), gib[what].get("sandhole", {}).get("sandhole")
        if w and sh:
            out.setdefault("warren_vs_sandhole", {})[f"server_cpu_per_gib_{what}"] = round(w / sh, 3)
    per_req = result.get("cpu_us_per_request", {}).get("keep-alive load", {})
    # The whole box's CPU per GiB moved and per request, row against baseline: on a saturated
    # box, the inverse of the throughput ratio (every process shares the same cores).
    for a, b in COMPARISONS:
        for what, runs in gib.items():
            x, y = runs.get(a, {}).get("box"), runs.get(b, {}).get("box")
            if x and y:
                out.setdefault(f"{a}_vs_{b}", {})[f"box_cpu_per_gib_{what}"] = round(x / y, 3)
        x, y = per_req.get(a, {}).get("box"), per_req.get(b, {}).get("box")
        if x and y:
            out.setdefault(f"{a}_vs_{b}", {})["box_cpu_per_request"] = round(x / y, 3)
    # The broker's CPU per request, with and without the request log (lower is better).
    on, off = per_req.get("warren", {}).get("broker"), per_req.get("warren_nolog", {}).get("broker")
    if on and off:
        out.setdefault("warren_vs_warren_nolog", {})["server_cpu_per_request"] = round(on / off, 3)
    setup = result["setup_ms"]
    for b in ("raw_sshd", "sandhole"):
        if b in setup:
            out.setdefault(f"warren_vs_{b}", {})["setup_ms"] = round(setup["warren"] / setup[b], 3)
    return out


def print_table(result):
    P = result["paths"]
    print(f"{'path':<13} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cold req/s':>10} {'cold p99':>9} "
          f"{'down MB/s':>9} {'up MB/s':>8}")
    for name, v in P.items():
        print(f"{name:<13} {v['rps']:>8.0f} {v['p50_ms']:>7.2f} {v['p99_ms']:>7.2f} {v['cold_rps']:>10.0f} "
              f"{v['cold_p99_ms']:>9.2f} {v['bulk_mb_s']:>9.0f} {v['upload_mb_s']:>8.0f}")
    for name, r in result["ratios"].items():
        print(f"{name:<26} " + "  ".join(f"{k} x{v}" for k, v in r.items() if k in
                                         ("rps", "p99_ms", "cold_rps", "bulk_mb_s", "upload_mb_s", "setup_ms",
                                          "server_cpu_per_gib_download", "server_cpu_per_gib_upload",
                                          "box_cpu_per_request", "box_cpu_per_gib_download",
                                          "box_cpu_per_gib_upload",
                                          "server_cpu_per_request")))
    print("tunnel setup (ssh start -> URL answers): " +
          ", ".join(f"{k} {v:.0f} ms" for k, v in result["setup_ms"].items()))
    for what, runs in result["cpu_percent"].items():
        print(f"CPU during {what} (% of one core): " +
              "; ".join(f"{p}: " + " ".join(f"{k} {v}" for k, v in c.items()) for p, c in runs.items()))
    for what, runs in result.get("cpu_us_per_request", {}).items():
        print(f"CPU-microseconds per request, {what}: " +
              "; ".join(f"{p}: " + " ".join(f"{k} {v}" for k, v in c.items()) for p, c in runs.items()))
    for what, runs in result.get("cpu_s_per_gib", {}).items():
        print(f"CPU-seconds per GiB, {what}: " +
              "; ".join(f"{p}: " + " ".join(f"{k} {v}" for k, v in c.items()) for p, c in runs.items()))
    for name, idle in result["idle"].items():
        print(f"idle tunnels on {name}: {idle['tunnels']}, RSS {idle['rss_kib_before']} -> {idle['rss_kib_idle']} KiB, "
              f"{idle['rss_kib_per_tunnel']} KiB and {idle['cpu_ms_per_idle_tunnel_per_s']} ms CPU/s per tunnel, "
              f"all connected in {idle['connect_s']} s")
    sc = result.get("scale")
    if sc and "hold" in sc:
        h, v, st = sc["hold"], sc["visitors"], sc["storm"]
        print(f"scale: {h['tunnels']} tunnels held at {h['rss_kib_per_tunnel']} KiB and "
              f"{h['cpu_ms_per_idle_tunnel_per_s']} ms CPU/s each; {v['connections']} idle visitor connections at "
              f"{v['rss_kib_per_connection']} KiB each; reconnect storm: all {st['owners']} back in "
              f"{st['all_back_s']} s ({st['retries']} retries)")


COLORS = {"direct": "#9e9e9e", "raw_sshd": "#8d6e63", "classic": "#e57373", "classic_tls": "#ef9a9a",
          "sandhole": "#81c784", "sandhole_tls": "#a5d6a7", "warren": "#1e88e5", "warren_tls": "#64b5f6",
          "warren_auth": "#3949ab", "warren_twin": "#5c6bc0",
          "warren_lb": "#26a69a", "warren_lb_proxy": "#00897b",
          "warren_nolog": "#90caf9"}


def chart(result, path):
    """One SVG a person can read at a glance: a panel per figure, a bar per path."""
    P = result["paths"]
    panels = [("req/s, keep-alive", {k: v["rps"] for k, v in P.items()}),
              ("p99 ms, keep-alive (lower is better)", {k: v["p99_ms"] for k, v in P.items()}),
              ("req/s, new connection each", {k: v["cold_rps"] for k, v in P.items()}),
              ("tunnel setup ms (lower is better)", dict(result["setup_ms"])),
              ("download MB/s", {k: v["bulk_mb_s"] for k, v in P.items()}),
              ("upload MB/s", {k: v["upload_mb_s"] for k, v in P.items()})]
    for what, runs in result.get("cpu_s_per_gib", {}).items():
        # Server side: every watched process but the tunnel's ssh client (sshd and nginx together)
        # and the whole box.
        panels.append((f"server CPU-s per GiB, {what} (lower is better)",
                       {p: round(sum(v for k, v in c.items() if k not in ("ssh_client", "box")), 2)
                        for p, c in runs.items()}))
    idle = {k: v["rss_kib_per_tunnel"] for k, v in result["idle"].items()
            if v["tunnels"] <= 1000 and "rss_kib_per_tunnel" in v}
    if idle:
        panels.append(("KiB of server RSS per idle tunnel (lower is better)", idle))
    pw, bar, gap, top = 460, 16, 5, 30
    ph = top + len(P) * (bar + gap) + 14
    rows_of_panels = (len(panels) + 1) // 2
    width, height = 2 * pw + 30, rows_of_panels * (ph + 5) + 45
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="15" font-weight="bold">Warren, sandhole and the classic stack on one box, '
           f'{result["when"]} (medians of {result["rounds"]} rounds; transfers of '
           f'{result["rounds"] * result.get("bulk_samples_per_round", 1)})</text>']
    for i, (title, values) in enumerate(panels):
        ox, oy = 10 + (i % 2) * (pw + 10), 35 + (i // 2) * (ph + 5)
        out.append(f'<text x="{ox}" y="{oy + 16}" font-weight="bold">{title}</text>')
        top_value = max(values.values() or [1]) or 1
        for j, (name, value) in enumerate(values.items()):
            y = oy + top + j * (bar + gap)
            w = max(1, (pw - 200) * value / top_value)
            out.append(f'<text x="{ox}" y="{y + 12}">{name}</text>')
            out.append(f'<rect x="{ox + 95}" y="{y}" width="{w:.1f}" height="{bar}" fill="{COLORS.get(name, "#888")}"/>')
            label = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
            out.append(f'<text x="{ox + 100 + w:.1f}" y="{y + 12}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
