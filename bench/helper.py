#!/usr/bin/env python3
"""Helpers for bench/run, standard library only.

  helper.py gen DB BYTES          build a realistic database of about BYTES bytes
  helper.py writer DB OUT STOP    commit small transactions until the file STOP exists,
                                  writing each commit's latency (microseconds) to OUT
  helper.py pct FILE...           p50/p99/max/count of latency files, as one line
  helper.py median N...           median of the numbers
"""

import json
import os
import random
import sqlite3
import statistics
import sys
import time

WORDS = None


def vocabulary(rng):
    """A fixed vocabulary of pronounceable words, so text compresses like prose does."""
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + [
        "an", "en", "in", "on", "un", "ar", "er", "or", "st", "th", "ch", "sh",
    ]
    words = set()
    while len(words) < 4000:
        words.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    # Zipf-like use: a few words are very common, most are rare.
    words = sorted(words)
    weights = [1.0 / (i + 1) for i in range(len(words))]
    return words, weights


def sentence(rng, n):
    return " ".join(rng.choices(WORDS[0], cum_weights=WORDS[2], k=n))


SCHEMA = """
PRAGMA page_size=4096;
PRAGMA journal_mode=WAL;
CREATE TABLE users(
  id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
  country TEXT NOT NULL, plan TEXT NOT NULL, created_at INTEGER NOT NULL, bio TEXT);
CREATE TABLE orders(
  id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
  created_at INTEGER NOT NULL, status TEXT NOT NULL, total_cents INTEGER NOT NULL,
  currency TEXT NOT NULL, note TEXT);
CREATE INDEX orders_user ON orders(user_id, created_at);
CREATE INDEX orders_status ON orders(status, created_at);
CREATE TABLE events(
  id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, ts INTEGER NOT NULL,
  kind TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX events_user_ts ON events(user_id, ts);
CREATE TABLE documents(
  id INTEGER PRIMARY KEY, owner INTEGER NOT NULL, title TEXT NOT NULL,
  body TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX documents_owner ON documents(owner);
CREATE TABLE avatars(user_id INTEGER PRIMARY KEY, image BLOB NOT NULL);
CREATE TABLE bench_writes(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, payload TEXT NOT NULL);
"""

COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "NL", "SE", "PL", "ES", "IT", "CA"]
PLANS = ["free", "free", "free", "pro", "team", "enterprise"]
STATUSES = ["paid", "paid", "paid", "shipped", "delivered", "refunded", "cancelled"]
KINDS = ["login", "view", "view", "view", "click", "search", "purchase", "logout"]


def gen(path, target):
    global WORDS
    rng = random.Random(target)
    words, weights = vocabulary(rng)
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    WORDS = (words, weights, cum)
    tmp = path + ".part"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    db = sqlite3.connect(tmp, isolation_level=None)
    db.executescript(SCHEMA)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-65536")
    t0 = 1_600_000_000
    uid = oid = eid = did = 0
    started = time.time()
    while True:
        db.execute("BEGIN")
        users = []
        for _ in range(1000):
            uid += 1
            name = sentence(rng, 2).title()
            users.append((uid, f"{name.replace(' ', '.').lower()}.{uid}@example.com", name,
                          rng.choice(COUNTRIES), rng.choice(PLANS),
                          t0 + uid * 37, sentence(rng, rng.randint(0, 30)) or None))
        db.executemany("INSERT INTO users VALUES(?,?,?,?,?,?,?)", users)
        orders = []
        for _ in range(10000):
            oid += 1
            orders.append((oid, rng.randint(1, uid), t0 + oid * 11, rng.choice(STATUSES),
                           rng.randint(100, 500_000), rng.choice(("USD", "EUR", "EUR", "GBP")),
                           sentence(rng, rng.randint(0, 12)) or None))
        db.executemany("INSERT INTO orders VALUES(?,?,?,?,?,?,?)", orders)
        events = []
        for _ in range(20000):
            eid += 1
            kind = rng.choice(KINDS)
            payload = json.dumps({
                "kind": kind, "path": "/" + sentence(rng, rng.randint(1, 3)).replace(" ", "/"),
                "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "ua": rng.choice(("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (iPhone)",
                                  "curl/8.5.0", "Mozilla/5.0 (Windows NT 10.0; Win64)")),
                "ms": rng.randint(1, 2000), "q": sentence(rng, rng.randint(0, 4)),
            })
            events.append((eid, rng.randint(1, uid), t0 + eid * 3, kind, payload))
        db.executemany("INSERT INTO events VALUES(?,?,?,?,?)", events)
        docs = []
        for _ in range(300):
            did += 1
            body = "\n\n".join(sentence(rng, rng.randint(20, 120)) + "."
                               for _ in range(rng.randint(1, 12)))
            docs.append((did, rng.randint(1, uid), sentence(rng, rng.randint(2, 8)).title(),
                         body, t0 + did * 101))
        db.executemany("INSERT INTO documents VALUES(?,?,?,?,?)", docs)
        # A few already-compressed images: a small share of incompressible bytes.
        db.executemany("INSERT OR REPLACE INTO avatars VALUES(?,?)",
                       [(rng.randint(1, uid), rng.randbytes(rng.randint(2000, 8000)))
                        for _ in range(40)])
        db.execute("COMMIT")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        size = pages * 4096
        print(f"\r  generating: {size >> 20} of {target >> 20} MiB "
              f"({time.time() - started:.0f}s)", end="", file=sys.stderr, flush=True)
        if size >= target:
            break
    print(file=sys.stderr)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.replace(tmp, path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)


def writer(path, out, stop):
    """An application writer: a small transaction, then a short pause, until told to stop."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    rng = random.Random(1)
    lat = []
    pay = "x" * 200
    n = 0
    while not os.path.exists(stop):
        t = time.perf_counter_ns()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO bench_writes(ts, payload) VALUES(?, ?)",
                   (time.time_ns(), pay))
        db.execute("UPDATE users SET created_at = created_at + 1 WHERE id = ?",
                   (rng.randint(1, 1000),))
        db.execute("COMMIT")
        lat.append((time.perf_counter_ns() - t) // 1000)
        n += 1
        if n % 500 == 0:
            db.execute("DELETE FROM bench_writes")
        time.sleep(0.002)
    db.close()
    with open(out, "w") as f:
        f.write("\n".join(map(str, lat)) + "\n")


def pct(files):
    lat = []
    for name in files:
        with open(name) as f:
            lat.extend(int(x) for x in f.read().split())
    lat.sort()
    if not lat:
        print("nan nan nan 0")
        return

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1000.0

    print(f"{q(0.5):.3f} {q(0.99):.3f} {lat[-1] / 1000.0:.3f} {len(lat)}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "gen":
        gen(args[0], int(args[1]))
    elif cmd == "writer":
        writer(*args)
    elif cmd == "pct":
        pct(args)
    elif cmd == "median":
        print(f"{statistics.median(float(a) for a in args):.3f}")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
