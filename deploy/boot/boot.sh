#!/bin/bash
# Sets an instance up from the release bundle this script came in, then waits until the
# instance is healthy. Run as root by the launch template's user data, after it wrote
# /etc/rapid/{bootstrap.conf,static.env,secrets.env} and extracted the bundle; the user data
# signals CloudFormation with this script's exit status. Every step is here, in order, so
# tests/test_boot.py runs this very file.
set -euo pipefail
. /etc/rapid/bootstrap.conf # ROLE, UNITS, LOG_GROUP, HEALTH_TIMEOUT_S, …
RELEASE=$(cd "$(dirname "$0")/.." && pwd)

# 1. OS packages. The AMI is pinned (ImageId), and Amazon Linux 2023 locks dnf to the
#    repository snapshot of its release, so every instance of a deployment gets the same ones.
dnf install -y python3.11 amazon-cloudwatch-agent logrotate
id rapid >/dev/null 2>&1 || useradd --system --home-dir /opt/rapid --create-home --shell /sbin/nologin rapid
install -d -m 0755 -o rapid -g rapid /opt/rapid

# 2. The code, offline: the locked wheels of the bundle, hashes checked; never PyPI.
python3.11 -m venv /opt/rapid/venv
/opt/rapid/venv/bin/pip install --no-index --find-links "$RELEASE/wheelhouse" \
  --require-hashes --no-deps --quiet -r "$RELEASE/requirements.lock"
/opt/rapid/venv/bin/pip install --no-index --no-deps --quiet "$RELEASE"/wheelhouse/rapid_response-*.whl

# 3. Helpers and units.
for tool in rapid-env rapid-shell rapid-health rapid-drain; do
  install -m 0755 "$RELEASE/boot/$tool" "/usr/local/bin/$tool"
done
install -m 0644 "$RELEASE"/boot/units/* /etc/systemd/system/

# 4. Logs: journald -> /var/log/rapid/journal.log (rapid-journal.service) -> the CloudWatch
#    agent -> LOG_GROUP (retention set on the group by the stack); logrotate bounds the file.
install -d -m 0750 /var/log/rapid /var/lib/rapid-journal
install -m 0644 "$RELEASE/boot/logrotate.conf" /etc/logrotate.d/rapid
AGENT=/opt/aws/amazon-cloudwatch-agent
install -d "$AGENT/etc"
sed "s|@LOG_GROUP@|$LOG_GROUP|g" "$RELEASE/boot/cloudwatch-agent.json" >"$AGENT/etc/rapid.json"
"$AGENT/bin/amazon-cloudwatch-agent-ctl" -a fetch-config -m ec2 -s -c "file:$AGENT/etc/rapid.json"

# 5. The schema (web instances): migrations, one instance at a time, before this release's
#    code starts; expand-only, so the previous release keeps running on it (deploy/README.md).
if [ "$ROLE" = web ]; then
  /usr/local/bin/rapid-env migrate
fi

# 6. Start, then wait for health: /healthz on web instances, the sender's heartbeat and the
#    intake on workers. Only then does the user data signal success, so a broken release
#    fails its rolling update instead of replacing the fleet.
systemctl daemon-reload
systemctl enable --now rapid-journal.service $UNITS
/usr/local/bin/rapid-health --wait "$HEALTH_TIMEOUT_S"
if [ "$ROLE" = worker ]; then
  # From now on a worker whose heartbeat stops tells its group to replace it.
  systemctl enable --now rapid-health.timer
fi
echo "rapid boot: healthy ($ROLE, release $(cat "$RELEASE/RELEASE"))"
