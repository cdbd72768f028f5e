#!/usr/bin/env bash
# Creates and deletes file-backed iSCSI volumes on a tgtd started by scripts/start-tgtd.sh, laid out the
# way Cinder's tgt target driver lays them out, so kiln's volume code meets what a real cloud hands it.
#
# Usage: scripts/tgt-volume.sh STATE_DIR CONTROL_PORT create TID IQN SIZE_MB [CHAP_USER CHAP_PASS]
#          Prints the backing file's path (STATE_DIR/volumes/target-TID.img) on stdout.
#        scripts/tgt-volume.sh STATE_DIR CONTROL_PORT delete TID [--force]
#          Deletes the target, its CHAP account and the backing file. Without --force a target with a
#          logged-in initiator is refused; with it the session is dropped and the initiator's I/O hangs
#          (libiscsi reconnects forever), so detach first.
#
# Layout: the data is LUN 1 (tgt's LUN 0 is its controller, and Cinder's connection_info says
# target_lun=1 for tgt); the target accepts every initiator address (ACL ALL), as Cinder's tgt targets
# do; with CHAP_USER/CHAP_PASS an incoming (target-checks-initiator) CHAP account is bound to it.
#
# The CHAP password is never printed. It does reach tgtadm's argv (`--password`), so it is readable in
# /proc/PID/cmdline for the milliseconds tgtadm runs: tgtadm has no way to take it from a file or stdin.
# Test passwords only.
set -euo pipefail

readonly TGTADM_TIMEOUT=10

die() {
    echo "tgt-volume: $*" >&2
    exit 1
}

usage="usage: $0 STATE_DIR CONTROL_PORT create TID IQN SIZE_MB [CHAP_USER CHAP_PASS] | delete TID [--force]"
(($# >= 4)) || die "$usage"
readonly STATE_DIR=$1 CONTROL_PORT=$2 ACTION=$3 TID=$4
shift 4
[[ $CONTROL_PORT =~ ^[0-9]{1,5}$ ]] || die "control port '$CONTROL_PORT' is not a number."
# tgtd refuses tid 0; the upper bound only keeps typos (a port number) out.
if ! [[ $TID =~ ^[0-9]{1,5}$ ]] || ((TID < 1 || TID > 65535)); then
    die "target id '$TID' is not in 1..65535."
fi
readonly VOLUME_DIR="$STATE_DIR/volumes"
readonly BACKING_FILE="$VOLUME_DIR/target-$TID.img"

command -v tgtadm >/dev/null || die "'tgtadm' is not installed; run scripts/install-deps.sh (it lists tgt)."

tgtadm_() {
    # tgtadm has no timeout of its own and would hang forever on a wedged tgtd.
    timeout "$TGTADM_TIMEOUT" tgtadm -C "$CONTROL_PORT" --lld iscsi "$@"
}

all_targets=$(tgtadm_ --op show --mode target 2>&1) ||
    die "no tgtd answers on control port $CONTROL_PORT ($all_targets); start one with scripts/start-tgtd.sh."

# The accounts bound to target $1, one a line, from `--op show --mode target` (the per-target
# "Account information:" block; outgoing accounts carry an " (outgoing)" suffix there).
accounts_of_target() {
    awk -v tid="$1" '
        /^Target [0-9]+:/ { split($2, a, ":"); in_target = (a[1] == tid); in_accounts = 0; next }
        in_target && /^    Account information:/ { in_accounts = 1; next }
        in_target && /^    [^ ]/ { in_accounts = 0 }
        in_target && in_accounts && /^        [^ ]/ { sub(/^ +/, ""); sub(/ \(outgoing\)$/, ""); print }
    ' <<<"$all_targets"
}

target_exists() {
    grep -q "^Target $1: " <<<"$all_targets"
}

create() {
    (($# == 2 || $# == 4)) || die "$usage"
    local iqn=$1 size_mb=$2 chap_user=${3:-} chap_pass=${4:-}
    # QEMU and libvirt address the LUN as "IQN/LUN", so a '/' or blank in the IQN cannot work.
    [[ $iqn =~ ^iqn\.[0-9]{4}-[0-9]{2}\.[^/[:space:]]+$ ]] ||
        die "'$iqn' is not an iSCSI qualified name (iqn.YYYY-MM.reversed.domain[:name], no '/' or blanks)."
    if ! [[ $size_mb =~ ^[0-9]{1,7}$ ]] || ((size_mb < 1)); then
        die "size '$size_mb' is not a whole number of MiB >= 1."
    fi
    if [[ -n $chap_user ]]; then
        # tgtd receives "user=U,password=P" and splits at the first comma.
        [[ $chap_user =~ ^[A-Za-z0-9._:@-]+$ ]] ||
            die "CHAP user '$chap_user' may only hold letters, digits and . _ : @ -."
        # The value is not quoted back: it is a password.
        [[ -n $chap_pass && $chap_pass != *[[:space:][:cntrl:]]* ]] ||
            die "the CHAP password for '$chap_user' is empty or holds blanks or control characters."
        # Accounts are global in tgtd, not per target: reusing one would silently keep its old password.
        local accounts
        accounts=$(tgtadm_ --op show --mode account) || die "could not list tgtd's CHAP accounts."
        if grep -Fqx "    $chap_user" <<<"$accounts"; then
            die "CHAP user '$chap_user' already exists in this tgtd; use one user per volume, as Cinder does."
        fi
    fi
    if target_exists "$TID"; then
        die "target $TID already exists; delete it first with '$0 $STATE_DIR $CONTROL_PORT delete $TID'."
    fi
    if awk -v iqn="$iqn" '/^Target [0-9]+:/ && $3 == iqn { found = 1 } END { exit !found }' <<<"$all_targets"; then
        die "another target already has the name '$iqn'."
    fi
    # A leftover file would hand a new volume an old volume's data.
    [[ ! -e $BACKING_FILE ]] || die "'$BACKING_FILE' already exists (a volume that was never deleted?)."

    mkdir -p "$VOLUME_DIR"
    # Undo whatever was done so far: a half-made target would make the next create fail confusingly.
    local made_target=no made_account=no
    rollback() {
        [[ $made_target == yes ]] && tgtadm_ --op delete --force --mode target --tid "$TID" >/dev/null 2>&1
        [[ $made_account == yes ]] && tgtadm_ --op delete --mode account --user "$chap_user" >/dev/null 2>&1
        rm -f "$BACKING_FILE"
    }
    step() {
        local what=$1 out
        shift
        if ! out=$("$@" 2>&1); then
            rollback
            die "could not $what: $out"
        fi
    }
    # Sparse: a 64 MiB test volume costs nothing until written, like a thin LV.
    step "create the sparse file '$BACKING_FILE'" truncate -s "${size_mb}M" "$BACKING_FILE"
    step "create target $TID '$iqn'" tgtadm_ --op new --mode target --tid "$TID" --targetname "$iqn"
    made_target=yes
    step "add '$BACKING_FILE' as LUN 1 of target $TID" \
        tgtadm_ --op new --mode logicalunit --tid "$TID" --lun 1 --backing-store "$BACKING_FILE"
    step "open target $TID to all initiators" tgtadm_ --op bind --mode target --tid "$TID" --initiator-address ALL
    if [[ -n $chap_user ]]; then
        step "create CHAP account '$chap_user'" \
            tgtadm_ --op new --mode account --user "$chap_user" --password "$chap_pass"
        made_account=yes
        step "bind CHAP account '$chap_user' to target $TID" \
            tgtadm_ --op bind --mode account --tid "$TID" --user "$chap_user"
    fi
    echo "$BACKING_FILE"
}

delete() {
    local force=()
    case "$*" in
        "") ;;
        --force) force=(--force) ;;
        *) die "$usage" ;;
    esac
    if target_exists "$TID"; then
        local accounts out
        accounts=$(accounts_of_target "$TID")
        if ! out=$(tgtadm_ --op delete "${force[@]}" --mode target --tid "$TID" 2>&1); then
            [[ $out == *"still active"* ]] &&
                die "target $TID still has a logged-in initiator; detach it first, or pass --force."
            die "could not delete target $TID: $out"
        fi
        # Deleting the target unbinds its accounts; the account itself lives on until deleted, unless
        # another target still uses it.
        all_targets=$(tgtadm_ --op show --mode target)
        local user tid others tids
        mapfile -t tids < <(sed -n 's/^Target \([0-9]\+\): .*/\1/p' <<<"$all_targets")
        for user in $accounts; do
            others=no
            for tid in "${tids[@]}"; do
                if grep -Fqx "$user" <<<"$(accounts_of_target "$tid")"; then others=yes; fi
            done
            if [[ $others == no ]]; then
                tgtadm_ --op delete --mode account --user "$user" >/dev/null ||
                    echo "tgt-volume: warning: could not delete CHAP account '$user'." >&2
            fi
        done
        echo "tgt-volume: deleted target $TID."
    else
        echo "tgt-volume: target $TID does not exist."
    fi
    if [[ -e $BACKING_FILE ]]; then
        rm -f "$BACKING_FILE"
        echo "tgt-volume: removed '$BACKING_FILE'."
    fi
}

case "$ACTION" in
    create) create "$@" ;;
    delete) delete "$@" ;;
    *) die "$usage" ;;
esac
