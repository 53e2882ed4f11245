#!/usr/bin/env bash
# A single-node Slurm cluster from Debian's packages, started here, and collegial.launch's submitit
# path checked against it (issue 23 point 2): a two-task job array, then a task warned of its time
# limit (SIGUSR2, as Slurm sends it) that checkpoints, is requeued and continues from its
# checkpoint. Needs root and apt (a CI container or a throwaway machine: it installs slurm-wlm
# and munge, writes /etc/slurm/slurm.conf and starts munged, slurmctld and slurmd).
#
#   bash bench/slurm_check.sh            # PY defaults to .venv/bin/python
#   STOP=1 bash bench/slurm_check.sh     # also stop the daemons at the end
#
# Measured on the 2-core development machine (Debian 12, slurm-wlm 22.05.8, no accounting
# database: submitit warns that sacct fails and reads the jobs' result files instead): install
# 31 s, configuration and daemons 3 s, the job array 11-14 s, the warned task's checkpoint,
# requeue and continuation 170 s (Slurm holds a requeued job about two minutes before it starts
# it again). So a CI job can start the cluster in about a minute, and this whole check takes
# about 4 minutes; it is not part of `make test` (root, apt). Use a throwaway machine: once srun
# is on PATH, every `--launcher submitit` (and the submitit tests, which expect submitit's local
# executor) submits to this cluster. To remove it: scontrol shutdown; stop munged;
# apt-get purge slurm-wlm slurmctld slurmd slurm-client munge.
set -euo pipefail
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d)
if ! command -v slurmctld >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
H=$(hostname -s); CPUS=$(nproc); MEM=$(awk '/MemTotal/{print int($2/1024)-512}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=ci
SlurmctldHost=$H
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
NodeName=$H CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
chown munge:munge /run/munge 2>/dev/null || true
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged || /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo

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
        while not stop.requested and step < 12000:
            time.sleep(0.01)
            step += 1
    ckpt.write_text(str(step))
    return "stopped" if stop.requested else "ran to the end"
EOF
PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$WORK" <<'EOF' 2>&1 | grep -v "sacct\|accounting storage"
import operator, subprocess, sys, time
from pathlib import Path
import submitit
import fake_run
from collegial.launch import Launcher, _Task, run_jobs

work = Path(sys.argv[1])
t = time.perf_counter()
assert run_jobs(operator.add, [(1, 2), (3, 4)], Launcher("submitit", cluster="slurm", time_min=5), work / "array") == [3, 7]
print(f"slurm_check: a 2-task job array through Slurm: {time.perf_counter() - t:.0f} s")
t = time.perf_counter()
ex = submitit.AutoExecutor(folder=str(work / "requeue"), cluster="slurm")
ex.update_parameters(timeout_min=5)
job = ex.submit(_Task(fake_run.run, 1), str(work))
while subprocess.run(["squeue", "-h", "-j", job.job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip() != "RUNNING":
    time.sleep(1)
time.sleep(10)  # the run is listening for its stop request by now
subprocess.run(["scancel", "--signal", "USR2", job.job_id], check=True)  # Slurm's time-limit warning
out = job.result()
steps = (work / "last.pt").read_text()
assert out == f"continued from step {steps}", out
print(f"slurm_check: warned, checkpointed at step {steps}, requeued, continued: {time.perf_counter() - t:.0f} s")
EOF
rc=${PIPESTATUS[0]}
[ "${STOP:-0}" = 1 ] && { scontrol shutdown >/dev/null 2>&1 || true; kill "$(cat /run/munge/munged.pid 2>/dev/null)" 2>/dev/null || true; }
rm -rf "$WORK"
[ "$rc" = 0 ] && echo "slurm_check: passed" || echo "slurm_check: FAILED"
exit "$rc"
