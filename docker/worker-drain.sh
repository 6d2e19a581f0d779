#!/bin/sh
# Kubernetes preStop hook for the worker: send the SIGTERM that starts the drain (no new job; the running ones
# finish within LLADA_DRAIN_TIMEOUT_S or are handed back, re-queued at once; then Ray stops and the worker
# exits 0), and wait until the worker has exited. PID 1 is tini, which passes the signal on to Celery alone.
# The kubelet sends its own SIGTERM only once this hook returns, or when terminationGracePeriodSeconds runs
# out: then it is the worker's second SIGTERM, which cuts the drain short (hand back now), 2 s before SIGKILL.
kill -TERM 1
while kill -0 1 2>/dev/null; do
    sleep 2
done
