#!/usr/bin/env bash
# Builds the floor probe next to its source (git-ignored): perf/floor/floor-relay.
set -euo pipefail
cd "$(dirname "$0")"
cc -O2 -pthread -Wall -Wextra -o floor-relay floor-relay.c
