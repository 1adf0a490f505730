"""A W&B-instrumented training script that is not our trainer, as a user would bring one: it
reads its arguments with argparse, logs `val_loss` every epoch to wandb and records what W&B's
agent gave it. Its loss falls faster with a larger lr, so hyperband has something to stop."""

import argparse
import os
import sys
import time

import wandb

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--seconds_per_epoch", type=float, default=0.5)
parser.add_argument("--exit_code", type=int, default=0)
parser.add_argument("--nested", type=int, default=0, help="also log {'val': {'loss': ...}}")
parser.add_argument("--own_dir", default="", help="wandb.init(dir=...) of its own")
args = parser.parse_args()
if args.exit_code:
    sys.exit(args.exit_code)

run = wandb.init(config=vars(args), **({"dir": args.own_dir} if args.own_dir else {}))
for epoch in range(1, args.epochs + 1):
    loss = 1.0 / (1.0 + args.lr * epoch)
    run.log({"epoch": epoch, "val_loss": loss, **({"val": {"loss": loss}} if args.nested
                                                    else {})})
    time.sleep(args.seconds_per_epoch)
run.summary["agent_environment"] = {name: os.environ.get(name) for name in (
    "WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_MODE")}
run.finish()
