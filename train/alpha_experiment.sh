#!/usr/bin/env bash
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m train.alpha_experiment "$@"
