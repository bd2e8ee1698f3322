#!/usr/bin/env bash
# Cron/systemd wrapper for `vsearch index`: silent when all is well, one line on stderr when
# not (cron mails it; systemd logs it), and one compact JSON summary per run appended to
# $VSEARCH_LOG_DIR/index.jsonl (exit code and finish time added) for dashboards and alerts.
#
#   usage: vsearch-index-cron.sh SOURCE [more `vsearch index` flags, e.g. --shard 1/4]
#   env:   VSEARCH_* settings; VSEARCH_LOG_DIR (default /var/log/vsearch);
#          VSEARCH_BIN (default: vsearch on PATH)
#   exit:  the exit code of `vsearch index` (0 ok, 1 some images failed, 2 usage/config,
#          3 another run holds the lock, 4 Milvus unavailable, 5 refused a mass deletion)
set -uo pipefail
LOG_DIR=${VSEARCH_LOG_DIR:-/var/log/vsearch}
VSEARCH=${VSEARCH_BIN:-vsearch}
mkdir -p "$LOG_DIR"

summary=$("$VSEARCH" --quiet index "$@" --json 2>>"$LOG_DIR/index.log")
rc=$?
if [ -n "$summary" ]; then
    printf '%s\n' "$summary" |
        jq -c --argjson rc "$rc" '. + {exit_code: $rc, finished_at: (now | todate)}' \
            >>"$LOG_DIR/index.jsonl"
fi
case $rc in
0) ;;
1) echo "vsearch index: $(printf '%s' "$summary" | jq -r '.failed_count') item(s) failed;" \
    "reasons in $LOG_DIR/index.jsonl" >&2 ;;
3) echo "vsearch index: the previous run still holds the lock; this run was skipped" >&2 ;;
*) echo "vsearch index failed (exit $rc): $(tail -n 1 "$LOG_DIR/index.log")" >&2 ;;
esac
exit "$rc"
