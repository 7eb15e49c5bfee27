#!/bin/sh
# Run shellcheck on every shell script of the repository (`make lint` runs this).
#
# A shell script is any file git knows (tracked, or new and not ignored) whose first
# line is a sh/bash/dash shebang, wherever it lives, so a new script is checked without
# being listed anywhere. The installer's maintainer-script templates (*.sh.j2) are
# rendered and checked by installer/tests/test_maintainer_scripts.py instead.
#
#   scripts/shellcheck.sh          check them all
#   scripts/shellcheck.sh --list   only print the list
set -eu
cd "$(dirname "$0")/.."

list_scripts() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files --cached --others --exclude-standard
    else
        find . \( -name .git -o -name .venv -o -name build -o -name dist \) -prune \
            -o -type f -print | sed 's|^\./||'
    fi | sort -u | while IFS= read -r path; do
        case "$path" in *.j2) continue ;; esac
        if [ -f "$path" ] && [ ! -L "$path" ] && head -n 1 "$path" |
            grep -Eq '^#![[:space:]]*(/usr)?/bin/(env[[:space:]]+)?(sh|bash|dash|ash|ksh)([[:space:]]|$)'; then
            printf '%s\n' "$path"
        fi
    done
}

scripts=$(list_scripts)
if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "$scripts"
    exit 0
fi
if [ -z "$scripts" ]; then
    echo "shellcheck: no shell scripts found" >&2
    exit 1
fi
if ! command -v shellcheck >/dev/null 2>&1; then
    echo "shellcheck: not installed (apt-get install shellcheck, or make sysdeps)" >&2
    exit 1
fi
count=$(printf '%s\n' "$scripts" | wc -l)
# One path per line; no tracked path contains a newline.
printf '%s\n' "$scripts" | tr '\n' '\0' | xargs -0 shellcheck
echo "shellcheck: $count scripts clean"
