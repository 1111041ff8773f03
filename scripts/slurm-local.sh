#!/usr/bin/env bash
# A real single-node SLURM cluster, with accounting, on this machine: the way to try
# `lorasweep run --launcher slurm` on a laptop, and what the SLURM tests run against.
#
#   sudo bash scripts/slurm-local.sh up       # install (Debian/Ubuntu) if needed, then start
#   sudo bash scripts/slurm-local.sh status   # each daemon, and the node's state
#   sudo bash scripts/slurm-local.sh down     # stop every daemon it started
#
# Runs as root, without systemd: munged, a private MariaDB (127.0.0.1:3307, its own data folder)
# with the accounting database, slurmdbd, slurmctld and slurmd, started in that order (munged
# before slurmdbd; accounting is what lets sacct, and so submitit, see cancelled jobs).
# `up` is idempotent: what already runs is left alone. The node advertises at least 8 CPUs and
# 8 count-only "gpu" resources (SlurmdParameters=config_overrides) so that a few array tasks
# with the launcher's defaults (--gpus-per-task=1) run at once on a small machine.
set -euo pipefail

ETC=/etc/slurm
RUN=/run/slurm
LOGDIR=/var/log/slurm
STATE=/var/lib/slurm-local
DB_PORT=3307
DB_SOCK="$RUN/mariadb.sock"
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

die() { echo "error: $*" >&2; exit 2; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local limit=$(( $1 * 10 )) what=$2; shift 2
    for ((i = 0; i < limit; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "$what did not come up; see $LOGDIR"
}

install() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

write_config() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc); ((cpus < 8)) && cpus=8
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$ETC" "$RUN" "$LOGDIR" "$STATE" /var/spool/slurmctld /var/spool/slurmd
    cat > "$ETC/slurm.conf" <<EOF
# Written by lorasweep's scripts/slurm-local.sh: a single-node cluster for trying and testing.
ClusterName=lorasweep-local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
GresTypes=gpu
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # Stand-in GPU device files: gres/gpu needs files to count; nothing opens them.
    touch "$RUN"/fake-gpu{0..7}
    echo "NodeName=$host Name=gpu File=$RUN/fake-gpu[0-7]" > "$ETC/gres.conf"
    cat > "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGDIR/slurmdbd.log
EOF
    chmod 600 "$ETC/slurmdbd.conf"
}

start_munge() {
    alive /run/munge/munged.pid && return 0
    mkdir -p /run/munge && chown munge:munge /run/munge
    [[ -f /etc/munge/munge.key ]] || die "no /etc/munge/munge.key: reinstall the munge package"
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
    alive "$RUN/mariadb.pid" && return 0
    if [[ ! -d "$STATE/mysql/mysql" ]]; then
        mkdir -p "$STATE/mysql" && chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --skip-test-db \
            --auth-root-authentication-method=socket >"$LOGDIR/mariadb-install.log" 2>&1
    fi
    chown mysql:mysql "$RUN"
    mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCK" --port=$DB_PORT \
        --bind-address=127.0.0.1 --pid-file="$RUN/mariadb.pid" --skip-log-bin \
        --log-error="$LOGDIR/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadb mariadb-admin --socket="$DB_SOCK" ping
    mariadb --socket="$DB_SOCK" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_daemon() {  # start_daemon NAME PIDFILE
    alive "$2" && return 0
    "/usr/sbin/$1" </dev/null >/dev/null 2>&1
}

node_idle() { [[ "$(sinfo -h -N -o %t 2>/dev/null | head -1)" =~ ^(idle|mix|alloc) ]]; }

up() {
    [[ $(id -u) == 0 ]] || die "run as root (it starts system daemons): sudo bash $0 up"
    install
    write_config
    start_munge
    start_mariadb
    start_daemon slurmdbd "$RUN/slurmdbd.pid"
    wait_for 30 slurmdbd sacctmgr -n list cluster
    start_daemon slurmctld "$RUN/slurmctld.pid"
    wait_for 30 slurmctld scontrol ping
    start_daemon slurmd "$RUN/slurmd.pid"
    if [[ "$(sinfo -h -N -o %t 2>/dev/null | head -1)" =~ ^(drain|inval|down) ]]; then
        scontrol update nodename="$(hostname -s)" state=resume  # drained by an older config
    fi
    wait_for 30 "the node (sinfo)" node_idle
    echo "slurm-local: up ($(sinfo -h -o '%P %D node(s) %t'))"
}

down() {
    local pidfile
    for pidfile in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$RUN/slurmdbd.pid" "$RUN/mariadb.pid" \
                   /run/munge/munged.pid; do
        if alive "$pidfile"; then
            local pid; pid=$(cat "$pidfile")
            kill "$pid"
            for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    echo "slurm-local: down"
}

status() {
    local ok=0 name pidfile
    for name in munged:/run/munge/munged.pid mariadb:$RUN/mariadb.pid slurmdbd:$RUN/slurmdbd.pid \
                slurmctld:$RUN/slurmctld.pid slurmd:$RUN/slurmd.pid; do
        pidfile=${name#*:}
        if alive "$pidfile"; then echo "${name%%:*}: running"; else echo "${name%%:*}: stopped"; ok=1; fi
    done
    ((ok == 0)) && sinfo -h -N -o "node %N: %t" 2>/dev/null
    return $ok
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: bash $0 up|down|status" >&2; exit 2 ;;
esac
