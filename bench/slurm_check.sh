#!/usr/bin/env bash
# A single-node Slurm cluster from Debian's packages, started here, and collegial.launch's submitit
# path checked against it (issue 23 point 2): a two-task job array, then a task warned of its time
# limit (SIGUSR2, as Slurm sends it) that checkpoints, is requeued and continues from its
# checkpoint. CI runs it (tests/test_slurm.py, with COLLEGIAL_SLURM_CHECK=1 as .ci/run sets);
# `make test` alone never does. Needs root and apt (a CI container or a throwaway machine: it
# installs slurmctld, slurmd, slurm-client and munge, writes /etc/slurm/slurm.conf and starts
# munged, slurmctld and slurmd).
#
#   bash bench/slurm_check.sh            # PY defaults to .venv/bin/python
#   STOP=1 bash bench/slurm_check.sh     # also stop the daemons at the end (what the test does)
#
# Exit status: 0 passed; 1 Slurm ran but collegial's launcher failed; 3 the cluster could not be
# started (the line "slurm_check: could not start Slurm: WHY" says why: not root, no apt, the
# install failed, a slurm.conf this check did not write, a daemon that refused, a node that did
# not come up, a plain `srun true` that failed). Every wait has a time limit: apt-get update 90 s
# and install 150 s, the daemons 30 s, `srun true` 30 s, the launcher's checks 150 s, stopping the
# jobs and daemons 40 s (490 s at worst).
#
# Slurm holds a requeued job about two minutes before it starts it again (Reason=BeginTime); the
# check starts it at once (`scontrol update JobId=ID StartTime=now` once squeue shows it PENDING
# again), which leaves the requeue path as it is and takes seconds instead of minutes.
#
# Measured on the 2-core development machine (Debian 12, slurm 22.05.8, no accounting database:
# submitit warns that sacct fails and reads the jobs' result files instead), from the
# "slurm_check: ... s" lines it prints: install 12.8 s (apt's cache emptied first; a fresh
# `apt-get update` of Debian 12's lists took 2.6 s more), configuration and daemons 0.1-1.1 s,
# `srun true` 0.1 s, the 2-task job array 8-10 s, the warned task's checkpoint, requeue and
# continuation 6-12 s (about 2 min more without the StartTime update); in all 38 s with the
# install, 18-25 s without (the test around it: 40 s). Once srun is on PATH,
# submitit's AutoExecutor without a cluster (`--launcher submitit`) submits to Slurm; collegial's
# tests pin submitit's local executor. To remove the cluster: scontrol shutdown; kill munged;
# apt-get purge slurmctld slurmd slurm-client munge.
set -uo pipefail
PY=${PY:-.venv/bin/python}
MARK="# written by collegial's bench/slurm_check.sh"
WORK=$(mktemp -d)
T0=$EPOCHREALTIME
T=$T0
lap() {  # "slurm_check: WHAT: S s" since the last lap
    local now=$EPOCHREALTIME
    awk -v a="$T" -v b="$now" -v w="$1" 'BEGIN{printf "slurm_check: %s: %.1f s\n", w, b - a}'
    T=$now
}
running() { ps -C "$1" -o stat= | grep -qv Z; }  # a process of that name, not an exited one's zombie
wait_until() {  # wait_until SECONDS 'CONDITION': false if it still fails after SECONDS
    timeout "$1" bash -c "until $2; do sleep 0.5; done" 2>/dev/null
}
stop_daemons() {  # the jobs left first (a job's srun waits for the controller), then the daemons
    timeout 10 scancel --partition=debug >/dev/null 2>&1 || true
    wait_until 10 '[ -z "$(squeue -h)" ]' || true
    timeout 10 scontrol shutdown >/dev/null 2>&1 || true
    kill "$(cat /run/munge/munged.pid 2>/dev/null)" 2>/dev/null || true
    wait_until 10 '! ps -C slurmctld,slurmd,slurmstepd,munged -o stat= | grep -qv Z' || true
}
OURS=0  # 1 once slurm.conf is this check's: only then does STOP=1 stop anything
finish() {
    [ "${STOP:-0}" = 1 ] && [ "$OURS" = 1 ] && stop_daemons
    rm -rf "$WORK"
}
trap finish EXIT
cannot_start() {
    echo "slurm_check: could not start Slurm: $*"
    exit 3
}

[ "$(id -u)" = 0 ] || cannot_start "not root (it installs packages and starts daemons)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v srun >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot_start "no apt-get to install slurmctld, slurmd, slurm-client and munge"
    timeout 90 apt-get update -qq >/dev/null 2>&1 || cannot_start "apt-get update failed (or took over 90 s)"
    DEBIAN_FRONTEND=noninteractive timeout 150 apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
        || cannot_start "apt-get install slurmctld slurmd slurm-client munge failed (or took over 150 s)"
fi
lap "install"

CONF=/etc/slurm/slurm.conf
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    cannot_start "$CONF exists and this check did not write it (a real cluster's node? use a throwaway machine)"
fi
H=$(hostname -s); CPUS=$(nproc); MEM=$(awk '/MemTotal/{print int($2/1024)-512}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
OURS=1
cat > "$CONF" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=$H(127.0.0.1)
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
chown munge:munge /run/munge 2>/dev/null || true
running munged || su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force \
    || cannot_start "munged refused to start"
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || cannot_start "munge cannot encode and decode a credential"
# -c: no jobs recovered from an earlier run (one whose processes were killed would hold the node)
running slurmctld || /usr/sbin/slurmctld -c || cannot_start "slurmctld refused to start (see /var/log/slurm/slurmctld.log)"
running slurmd || /usr/sbin/slurmd || cannot_start "slurmd refused to start (see /var/log/slurm/slurmd.log)"
wait_until 30 'sinfo -h -o %T | grep -q idle' || cannot_start "the node did not come up idle within 30 s ($(timeout 5 sinfo -h -o '%T %E' 2>&1 | head -1); see /var/log/slurm/)"
lap "configuration and daemons"
timeout 30 srun -N1 -t 1 true >/dev/null 2>&1 || cannot_start "a plain 'srun true' failed or took over 30 s (see /var/log/slurm/)"
lap "srun true"

cat > "$WORK/fake_run.py" <<'EOF'
"""A training-like run: it listens for the stop request as collegial's training does."""
import time
from pathlib import Path
from collegial.train.runtime import StopSignal

def run(folder):
    ckpt = Path(folder) / "last.pt"
    if ckpt.exists():
        return f"continued from step {ckpt.read_text()}"
    stop, step = StopSignal(), 0
    with stop.installed():
        (Path(folder) / "listening").write_text("")
        while not stop.requested and step < 12000:
            time.sleep(0.01)
            step += 1
    ckpt.write_text(str(step))
    return "stopped" if stop.requested else "ran to the end"
EOF
PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}" timeout 150 "$PY" - "$WORK" <<'EOF' 2>&1 | grep -v "sacct\|accounting storage"
import operator, subprocess, sys, time
from pathlib import Path
import submitit
import fake_run
from collegial.launch import Launcher, _Task, run_jobs

work = Path(sys.argv[1])


def state(job_id):
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=10).stdout.strip()


def wait_for(ok, seconds, what):
    end = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > end:
            sys.exit(f"slurm_check: waited {seconds} s for {what}")
        time.sleep(0.5)


t = time.perf_counter()
assert run_jobs(operator.add, [(1, 2), (3, 4)], Launcher("submitit", cluster="slurm", time_min=5), work / "array") == [3, 7]
print(f"slurm_check: the 2-task job array through collegial's launcher: {time.perf_counter() - t:.0f} s", flush=True)
t = time.perf_counter()
ex = submitit.AutoExecutor(folder=str(work / "requeue"), cluster="slurm")
ex.update_parameters(timeout_min=5)
job = ex.submit(_Task(fake_run.run, 1), str(work))
wait_for((work / "listening").exists, 60, "the task's run to listen for its stop request")
subprocess.run(["scancel", "--signal", "USR2", job.job_id], check=True, timeout=10)  # Slurm's time-limit warning
# submitit requeues the task once the run has checkpointed; Slurm would hold it ~2 min: start it now
wait_for(lambda: state(job.job_id) == "PENDING", 60, "the warned task to be requeued")
subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], check=True, timeout=10)
out = job.result()
steps = (work / "last.pt").read_text()
assert out == f"continued from step {steps}", out
wait_for(lambda: state(job.job_id) == "", 30, "the requeued task's job to end")
print(f"slurm_check: warned, checkpointed at step {steps}, requeued, continued: {time.perf_counter() - t:.0f} s")
EOF
rc=${PIPESTATUS[0]}
T=$T0
if [ "$rc" = 0 ]; then lap "passed, in all"; else
    [ "$rc" = 124 ] && echo "slurm_check: the launcher's checks took over 150 s"
    lap "FAILED (exit $rc), after"
fi
[ "$rc" = 0 ] || rc=1
exit "$rc"
