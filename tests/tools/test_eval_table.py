#!/usr/bin/env python3
"""Checks tools/eval_table.py: its confidence intervals against independent values and its goal check's verdicts
on hand-made results (who is first, who lies inside whose interval, which KL rivals are eligible by bytes)."""
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import eval_table as et  # noqa: E402


def rows(policy, budget, task, values, field="correct", kv=1000.0, cold=0.0):
    out = []
    for i, v in enumerate(values):
        r = {"policy": policy, "budget": budget, "task": task, "sample": f"{task}-2048-s{i}", "status": "ok",
             "kv_read_bytes": str(kv), "cold_to_hot_bytes": str(cold), "correct": "", "score": "", "kl": "",
             "top1": ""}
        r[field] = str(v)
        out.append(r)
    return out


def cells(*groups):
    c = {}
    for g in groups:
        for r in g:
            c.setdefault((r["policy"], r["budget"], r["task"]), []).append(r)
    return c


def verdicts(lines):
    """task, budget -> (first, verdict) from the goal check's table."""
    out = {}
    for line in lines:
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) == 6 and parts[0] not in ("task", "---"):
            out[(parts[0], parts[1])] = (parts[2], parts[5])
    return out


class Intervals(unittest.TestCase):
    def test_wilson_matches_the_closed_form(self):
        # 8 of 10 at 95 %: 0.4902 .. 0.9433 (Wilson 1927; also statsmodels' proportion_confint(method="wilson"))
        lo, hi = et.wilson(8, 10)
        self.assertAlmostEqual(lo, 0.4902, places=4)
        self.assertAlmostEqual(hi, 0.9433, places=4)
        self.assertEqual(et.wilson(0, 8)[0], 0.0)
        self.assertTrue(math.isnan(et.wilson(0, 0)[0]))

    def test_bootstrap_brackets_the_mean_and_is_deterministic(self):
        xs = [0.1, 0.4, 0.2, 0.9, 0.3, 0.05, 0.6, 0.2]
        lo, hi = et.bootstrap(xs)
        m = sum(xs) / len(xs)
        self.assertLess(lo, m)
        self.assertGreater(hi, m)
        self.assertEqual((lo, hi), et.bootstrap(list(reversed(xs))))


class GoalCheck(unittest.TestCase):
    def check(self, c, tasks, budgets=("r0.25",)):
        policies = sorted({k[0] for k in c})
        return verdicts(et.goal_check(c, policies, ["full"] + list(budgets), tasks))

    def test_first_within_and_behind(self):
        n = 100
        c = cells(rows("full", "full", "niah-words", [1] * n),
                  # a: 90/100, heterocache 85/100 (inside a's Wilson interval 0.826 .. 0.945)
                  rows("tova", "r0.25", "niah-words", [1] * 90 + [0] * 10),
                  rows("heterocache", "r0.25", "niah-words", [1] * 85 + [0] * 15),
                  # multikey: heterocache 60/100 against 90/100: behind by 30 points
                  rows("tova", "r0.25", "multikey", [1] * 90 + [0] * 10),
                  rows("heterocache", "r0.25", "multikey", [1] * 60 + [0] * 40),
                  # passkey: heterocache first
                  rows("tova", "r0.25", "passkey", [1] * 50 + [0] * 50),
                  rows("heterocache", "r0.25", "passkey", [1] * 70 + [0] * 30),
                  # oracles never count as first
                  rows("h2o-oracle", "r0.25", "passkey", [1] * n))
        v = self.check(c, ["passkey", "multikey", "niah-words"])
        self.assertEqual(v[("niah-words", "r = 0.25")], ("tova", "within"))
        self.assertEqual(v[("multikey", "r = 0.25")], ("tova", "behind by 30 points"))
        self.assertEqual(v[("passkey", "r = 0.25")], ("heterocache", "first"))

    def test_ties_are_named(self):
        c = cells(rows("tova", "r0.25", "niah-uuids", [0] * 8), rows("heterocache", "r0.25", "niah-uuids", [0] * 8))
        v = self.check(c, ["niah-uuids"])
        self.assertEqual(v[("niah-uuids", "r = 0.25")], ("heterocache", "first (tied with tova)"))

    def test_kl_compares_only_policies_touching_no_more_bytes(self):
        c = cells(rows("heterocache", "r0.25", "kl", [0.08, 0.07, 0.09, 0.08], "kl", kv=1000, cold=10),
                  # lower KL but 10 MB moved per step: not eligible
                  rows("quest", "r0.25", "kl", [0.05, 0.05, 0.06, 0.05], "kl", kv=1000, cold=1e7),
                  # same bytes, slightly higher KL
                  rows("h2o", "r0.25", "kl", [0.09, 0.08, 0.10, 0.09], "kl", kv=1000, cold=0))
        v = self.check(c, ["kl"])
        self.assertEqual(v[("kl", "r = 0.25")], ("heterocache", "first"))
        # above r = 0.25 KL is not part of the goal
        c2 = {(p, "r0.5", t): rs for (p, _, t), rs in c.items()}
        self.assertNotIn(("kl", "r = 0.5"), self.check(c2, ["kl"], budgets=("r0.5",)))

    def test_single_needle_gap_against_the_full_cache(self):
        c = cells(rows("full", "full", "niah-numbers", [1] * 100),
                  rows("heterocache", "r0.25", "niah-numbers", [1] * 94 + [0] * 6),
                  rows("full", "full", "passkey", [1] * 100),
                  rows("heterocache", "r0.25", "passkey", [1] * 96 + [0] * 4))
        lines = et.goal_check(c, ["full", "heterocache"], ["full", "r0.25"], ["passkey", "niah-numbers"])
        text = "\n".join(lines)
        self.assertIn("| niah-numbers | 100% [96, 100] | 94% [88, 97] | +6 | missed |", text)
        self.assertIn("| passkey | 100% [96, 100] | 96% [90, 98] | +4 | met |", text)


if __name__ == "__main__":
    unittest.main()
