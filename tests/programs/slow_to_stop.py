"""A program that a sweep runs and that does not stop when asked: SIGTERM and SIGINT are
noted in the file given as --pid_file=PATH with .signals added, and it carries on (a user's
script that handles them so), having written its pid to PATH; it sleeps. Only SIGKILL ends
it."""

import os
import signal
import sys
import time

options = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--"))


def note(signum, frame):
    with open(options["pid_file"] + ".signals", "a") as file:
        file.write(signal.Signals(signum).name + "\n")


signal.signal(signal.SIGTERM, note)
signal.signal(signal.SIGINT, note)
with open(options["pid_file"] + ".tmp", "w") as file:
    file.write(str(os.getpid()))
os.replace(options["pid_file"] + ".tmp", options["pid_file"])  # whole, or not there yet
while True:
    time.sleep(60)
