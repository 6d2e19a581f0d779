#!/bin/sh
# Kubernetes preStop hook for the worker: start Celery's warm shutdown (stop consuming, finish the
# running job) and wait until the worker has exited, so that a scale-down never cuts a job short.
# PID 1 is tini, which passes SIGTERM on to Celery alone. The pod's terminationGracePeriodSeconds
# bounds the wait; it must be longer than the longest job.
kill -TERM 1
while kill -0 1 2>/dev/null; do
    sleep 2
done
