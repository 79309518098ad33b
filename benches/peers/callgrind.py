#!/usr/bin/env python3
"""Where a request's instructions go, from a dump `run.py --instructions` keeps.

    python3 benches/peers/callgrind.py DUMP --requests N                    # by object, by function
    python3 benches/peers/callgrind.py DUMP --requests N --callers 'malloc|free'

DUMP and N are in the run's line of `run.py --instructions` (`callgrind`, `requests`); every
figure is per request: the dump's counts divided by N. By function, a function's own
instructions (its callees' left out); with `--callers`, each place that calls a function
matching the pattern, how often a request, and what the calls cost there (the callees'
counted in). Dumps made with `--cache-sim=yes` have more events: `--event I1mr` reads one.
"""

import argparse
import collections
import re
import sys

NAMED = re.compile(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$")


def read(path, event):
    """A dump's costs: own cost by (object, function), and calls by (caller, callee)."""
    names = {"ob": {}, "fn": {}}
    own = collections.Counter()
    calls = collections.Counter()
    inside = collections.Counter()
    position_columns, column = 1, 0
    obj = function = callee = None
    call = None  # the calls a `calls=` line announced; its cost line follows
    with open(path, errors="replace") as dump:
        for line in dump:
            line = line.rstrip("\n")
            if line.startswith("positions:"):
                position_columns = len(line.split()) - 1
            elif line.startswith("events:"):
                events = line.split()[1:]
                if event not in events:
                    sys.exit(f"callgrind.py: the dump has no {event}; it has {' '.join(events)}")
                column = events.index(event)
            elif named := NAMED.match(line):
                called, kind, key, name = named.groups()
                if name:
                    names[kind][key] = name
                name = names[kind].get(key, key)
                if not called and kind == "ob":
                    obj = name
                elif not called:
                    function = name
                elif kind == "fn":
                    callee = name
            elif line.startswith("calls="):
                call = int(line.split("=")[1].split()[0])
            elif line[:1].isdigit() or line[:1] in "+-*":
                counts = line.split()[position_columns:]
                cost = int(counts[column]) if column < len(counts) else 0
                if call is None:
                    own[(obj, function)] += cost
                else:
                    calls[(obj, function, callee)] += call
                    inside[(obj, function, callee)] += cost
                    call = None
    return own, calls, inside


def short(obj):
    return obj.rsplit("/", 1)[-1] if obj else "?"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump")
    p.add_argument("--requests", type=int, required=True, help="the requests the dump counted")
    p.add_argument("--callers", metavar="PATTERN", help="callers of the functions it matches (a regex)")
    p.add_argument("--event", default="Ir", help="the event to read [default: Ir, instructions]")
    p.add_argument("--top", type=int, default=30, help="rows to print [default: 30]")
    args = p.parse_args()
    own, calls, inside = read(args.dump, args.event)
    n = args.requests
    if args.callers:
        pattern = re.compile(args.callers)
        sites = collections.Counter()
        costs = collections.Counter()
        for (obj, caller, callee), count in calls.items():
            if callee and pattern.search(callee):
                sites[(obj, caller)] += count
                costs[(obj, caller)] += inside[(obj, caller, callee)]
        print(f"calls a request to /{args.callers}/: {sum(sites.values()) / n:.1f}, "
              f"costing {sum(costs.values()) / n:,.0f} {args.event}")
        for (obj, caller), count in sites.most_common(args.top):
            print(f"{count / n:8.2f} {costs[(obj, caller)] / n:9,.0f}  {short(obj)[:16]:16} {caller}")
        return
    print(f"{args.event} a request: {sum(own.values()) / n:,.0f}")
    objects = collections.Counter()
    for (obj, _), cost in own.items():
        objects[obj] += cost
    print("\nby object")
    for obj, cost in objects.most_common(args.top):
        if cost < n:
            break
        print(f"{cost / n:10,.0f}  {short(obj)}")
    print("\nby function, its own")
    for (obj, function), cost in own.most_common(args.top):
        print(f"{cost / n:10,.0f}  {short(obj)[:16]:16} {function}")


if __name__ == "__main__":
    main()
