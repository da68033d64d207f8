"""The first boot, executed: the launch templates' user data and the release bundle's
``boot/boot.sh`` run in order, as root, in a private mount namespace whose /etc, /opt,
/usr/local, /var and /run are overlays (the machine's own stay untouched).

Stand-ins (tests/boot_stubs) replace only what needs an instance: dnf, the AWS CLI (S3 reads
from a directory), cfn-signal, useradd, and systemctl — which starts each ``rapid@`` unit the
way its unit file says (environment files read at start, before any Exec line, as systemd
does). Secrets Manager and SQS are the moto server; the database and Redis are real. The
processes are the project's own ``rapid`` commands, reached through the bundle's ``rapid-env``.
Where ``systemd-analyze`` is installed, the installed units are verified with it too.

Given a release bundle in "S3", when a web instance and then a worker boot, then each signals
success only once its health check passes; a worker whose sender cannot start signals failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, free_port

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "cloudformation" / "rapid-response.yaml"
STUBS = Path(__file__).resolve().parent / "boot_stubs"
REGION = "us-east-1"
BUCKET, RELEASE_KEY = "rapid-artifacts", "releases/rapid-release-0.1.0-test.tar.gz"
#: What the overlays cover: everything the boot writes outside /tmp.
OVERLAID = ("etc", "opt", "usr/local", "var", "run")
UNITS_TO_VERIFY = (
    "rapid@web.service",
    "rapid@sender.service",
    "rapid-drain.service",
    "rapid-health.service",
    "rapid-health.timer",
    "rapid-journal.service",
)


def user_data(launch_template: str, env: dict[str, str]) -> str:
    """The launch template's whole user data, ``${…}`` rendered from ``env``."""
    template = load_cfn_yaml(str(TEMPLATE))
    data = template["Resources"][launch_template]["Properties"]["LaunchTemplateData"]
    separator, (header, body) = data["UserData"]["Fn::Base64"]["Fn::Join"]
    rendered = header["Fn::Sub"]
    for name, value in env.items():
        rendered = rendered.replace("${" + name + "}", value)
    assert "${" not in rendered, rendered
    mapping = body["Fn::FindInMap"]
    return str(separator).join([rendered, template["Mappings"][mapping[0]][mapping[1]][mapping[2]]])


@dataclass
class World:
    """What an instance of the stack would find around it."""

    tmp: Path
    env: dict[str, str]  # the template's parameters and attributes
    instance_env: Path  # the instance role's credentials, as variables
    s3: Path
    database: str
    app_role: str
    prefix: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[World]:
    if shutil.which("unshare") is None:
        pytest.fail("the boot test needs unshare (util-linux) and root", pytrace=False)
    tmp = tmp_path_factory.mktemp("boot")
    prefix = f"b{uuid.uuid4().hex[:8]}"
    database, app_role = f"rapid_boot_{uuid.uuid4().hex[:8]}", f"rapid_app_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        master = str(conn.execute(text("SELECT current_user")).scalar())
        conn.execute(text(f'CREATE DATABASE "{database}"'))

    aws = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    sm = boto3.client("secretsmanager", **aws)

    def secret(name: str, value: str) -> str:
        return str(sm.create_secret(Name=f"{prefix}/{name}", SecretString=value)["ARN"])

    arns = {
        "DatabaseMasterSecret": secret(
            "database", json.dumps({"username": master, "password": "unused-trust-auth"})
        ),
        "DatabaseAppSecret": secret(
            "database-app", json.dumps({"username": app_role, "password": "app-p@ss:w/rd"})
        ),
        # The local Redis has no AUTH and no TLS: a placeholder leaves REDIS_URL unset, so the
        # processes use their default, the tests' Redis (the prefix keeps them apart).
        "RedisAuthTokenSecret": secret("redis-auth-token", "REPLACE_ME"),
        "TwilioAuthTokenSecretArn": secret("twilio-auth-token", "twilio-token"),
        "SendGridApiKeySecretArn": secret("sendgrid-api-key", "SG.test-key"),
        "ApiTokenSecret": secret("api-token", "a" * 48),
        "SecretKeySecret": secret("secret-key", "k" * 64),
    }
    sm.close()
    sqs = boto3.client("sqs", **aws)
    for name in (f"{prefix}-intake-dlq", f"{prefix}-intake"):
        sqs.create_queue(QueueName=name)
    sqs.close()

    # The release bundle, laid out by the release script itself; the wheelhouse holds only a
    # named wheel (the stand-in pip checks the files it is pointed at, offline).
    bundle = tmp / "bundle"
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "release.sh"), "--layout", str(bundle)],
        check=True,
        cwd=ROOT,
    )
    (bundle / "wheelhouse" / "rapid_response-0.1.0-py3-none-any.whl").write_bytes(b"")
    s3 = tmp / "s3"
    (s3 / BUCKET / "releases").mkdir(parents=True)
    with tarfile.open(s3 / BUCKET / RELEASE_KEY, "w:gz") as tar:
        tar.add(bundle, arcname=".")

    instance_env = tmp / "instance.env"
    instance_env.write_text(
        f"AWS_ENDPOINT_URL={moto_url}\nAWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n"
    )
    env = {
        **arns,
        "AWS::StackName": "rapid-boot-test",
        "AWS::Region": REGION,
        "Prefix": prefix,
        "ArtifactBucket": BUCKET,
        "ReleaseKey": RELEASE_KEY,
        "TwilioAccountSid": "AC" + "0" * 32,
        "TwilioMessagingServiceSid": "MG" + "0" * 32,
        "TwilioFromNumbers": "",
        "SendGridWebhookPublicKey": "",
        "EmailFrom": "Example <news@example.org>",
        "OrgName": "Example",
        "OrgPostalAddress": '1 Main St, "Suite $5", Springfield',
        "PublicHostname": "alerts.example.org",
        "SmsRateAccount": "225",
        "SmsRatePerSender": "1",
        "EmailRate": "1000",
        "QuietHours": "21:00-08:00",
        "SenderChannels": "sms,email",
        "Database.Endpoint.Address": "127.0.0.1",
        "Database.Endpoint.Port": "5432",
        "Cache.PrimaryEndPoint.Address": "127.0.0.1",
        "Cache.PrimaryEndPoint.Port": "6379",
    }
    yield World(tmp, env, instance_env, s3, database, app_role, prefix)

    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        conn.execute(text(f'DROP ROLE IF EXISTS "{app_role}"'))
    admin.dispose()


@dataclass
class Boot:
    """One instance's boot: its exit status, what the stand-ins recorded, its overlays."""

    returncode: int
    output: str
    log: list[str]
    uppers: dict[str, Path]
    state: Path

    def file(self, path: str) -> Path:
        """Where the instance's ``path`` landed (its overlay's upper directory)."""
        for top, upper in self.uppers.items():
            if path.startswith(f"/{top}/"):
                return upper / path[len(top) + 2 :]
        raise AssertionError(path)


@pytest.fixture
def boot(world: World) -> Iterator[Any]:
    """Boots an instance of a launch template; stops its processes afterwards."""
    states: list[Path] = []

    def run(launch_template: str, name: str, **overrides: str) -> Boot:
        script = user_data(launch_template, world.env)
        script = script.replace(
            "_DB_NAME=rapid\n", f"_DB_NAME={world.database}\n_DB_SSLMODE=disable\n"
        )
        for old, new in overrides.items():
            script = script.replace(old.replace("__", "="), new)
        home = world.tmp / name
        home.mkdir()
        (home / "user-data").write_text(script)
        state, log = home / "state", home / "stub.log"
        state.mkdir()
        states.append(state)
        uppers = {}
        mounts = []
        for top in OVERLAID:
            upper, work = home / "upper" / top, home / "work" / top
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            uppers[top] = upper
            mounts.append(
                f"mount -t overlay overlay -o lowerdir=/{top},upperdir={upper},workdir={work} /{top}"
            )
        verify = " ".join(UNITS_TO_VERIFY)
        wrapper = "\n".join(
            [
                "set -e",
                *mounts,
                "set +e",
                f"bash {home / 'user-data'}",
                "rc=$?",
                "if command -v systemd-analyze >/dev/null; then",
                # Names resolve against the working directory: the units the boot installed.
                f"  cd /etc/systemd/system && systemd-analyze verify {verify} >{home / 'verify.log'} 2>&1",
                f"  echo $? >{home / 'verify.rc'}",
                "fi",
                "exit $rc",
            ]
        )
        env = {
            "PATH": f"{STUBS}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "STUB_LOG": str(log),
            "STUB_STATE": str(state),
            "STUB_S3": str(world.s3),
            "STUB_INSTANCE_ENV": str(world.instance_env),
            "PROJECT_VENV": str(ROOT / ".venv"),
            # The instance role, for every process on the instance (IMDS on EC2).
            **dict(
                line.split("=", 1) for line in world.instance_env.read_text().splitlines() if line
            ),
        }
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", wrapper],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        lines = log.read_text().splitlines() if log.exists() else []
        verified = home / "verify.rc"
        if result.returncode == 0 and verified.exists():  # systemd-analyze: the units pass it
            assert verified.read_text().strip() == "0", (home / "verify.log").read_text()
        return Boot(result.returncode, result.stdout + result.stderr, lines, uppers, state)

    yield run
    # The processes' drain is not under test here: SIGTERM, a moment, then SIGKILL (an
    # intake's long poll would otherwise hold the teardown for 20 s).
    pids = [int(p.read_text()) for state in states for p in state.glob("*.pid")]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        time.sleep(2 if sig == signal.SIGTERM else 0)


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return int(response.status)


def test_web_then_worker_boot_install_offline_migrate_and_signal_only_when_healthy(
    world: World, boot: Any
) -> None:
    # Given a release in S3 and an empty database, when a web instance boots
    port = free_port()
    web = boot(
        "WebLaunchTemplate",
        "web",
        PORT__8000=f"PORT={port}",
        HEALTH_TIMEOUT_S__600="HEALTH_TIMEOUT_S=90",
    )
    assert web.returncode == 0, web.output
    # Then it installed from the bundle only, never from an index
    pips = [line for line in web.log if line.startswith("pip ")]
    assert len(pips) == 2 and all("--no-index" in line for line in pips)
    assert "--require-hashes" in pips[0] and "requirements.lock" in pips[0]
    # It migrated the database as the master and created the application's role…
    app = create_engine(
        PG_ADMIN_URL.rsplit("/", 1)[0].replace("://", f"://{world.app_role}:x@")
        + f"/{world.database}"
    )
    with app.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM blasts")).scalar() == 0
    app.dispose()
    # …started rapid web and rapid scheduler through rapid-env, as the unit says…
    starts = [line for line in web.log if line.startswith("systemctl start rapid@")]
    assert [s.split(":")[0] for s in starts] == [
        "systemctl start rapid@web.service",
        "systemctl start rapid@scheduler.service",
    ]
    assert all("/usr/local/bin/rapid-env exec /opt/rapid/venv/bin/rapid" in s for s in starts)
    assert healthz(port) == 200
    # …shipped its logs to the stack's log group, and only then signalled success
    agent = json.loads(web.file("/opt/aws/amazon-cloudwatch-agent/etc/rapid.json").read_text())
    groups = {f["log_group_name"] for f in agent["logs"]["logs_collected"]["files"]["collect_list"]}
    assert groups == {f"/rapid/{world.prefix}"}
    assert any(line.startswith("amazon-cloudwatch-agent-ctl -a fetch-config") for line in web.log)
    signals = [line for line in web.log if line.startswith("cfn-signal")]
    assert signals == [
        f"cfn-signal --exit-code 0 --stack rapid-boot-test --resource WebGroup --region {REGION}"
    ]
    # No secret was written to disk on the way
    etc = web.uppers["etc"] / "rapid"
    assert not (etc / "env").exists()
    for path in etc.rglob("*"):
        assert "twilio-token" not in path.read_text()

    # When a worker boots after it
    worker = boot("WorkerLaunchTemplate", "worker", HEALTH_TIMEOUT_S__600="HEALTH_TIMEOUT_S=90")
    assert worker.returncode == 0, worker.output
    # Then it runs no migration, starts the intake and a sender with a heartbeat, waits for
    # the heartbeat, signals success, and only then arms its health reporting
    assert not any("migrate" in line for line in worker.log)
    (sender,) = [line for line in worker.log if line.startswith("systemctl start rapid@sender")]
    assert (
        "rapid sender --channels sms,email --heartbeat-file /run/rapid/sender/heartbeat" in sender
    )
    assert worker.file("/run/rapid/sender/heartbeat").exists()
    order = [
        i
        for i, line in enumerate(worker.log)
        if line.startswith(
            ("cfn-signal --exit-code 0", "systemctl enable --now rapid-health.timer")
        )
    ]
    assert len(order) == 2
    assert worker.log[order[0]].startswith("systemctl enable --now rapid-health.timer")


def load_rapid_env() -> Any:
    """deploy/boot/rapid-env (a script without .py) as a module."""
    loader = SourceFileLoader("rapid_env", str(ROOT / "deploy" / "boot" / "rapid-env"))
    spec = importlib.util.spec_from_loader("rapid_env", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def migrated(world: World) -> World:
    """The world's database migrated and its application role created, as a web boot does."""
    rapid_env = load_rapid_env()
    etc = world.tmp / "etc-migrate"
    etc.mkdir()
    (etc / "static.env").write_text(
        f"AWS_REGION={REGION}\n_DB_ADDRESS=127.0.0.1:5432\n_DB_NAME={world.database}\n"
        "_DB_SSLMODE=disable\n"
    )
    (etc / "secrets.env").write_text(
        f"DATABASE_URL={world.env['DatabaseAppSecret']}\n"
        f"DATABASE_MASTER_URL={world.env['DatabaseMasterSecret']}\n"
    )
    moto = dict(line.split("=", 1) for line in world.instance_env.read_text().splitlines())
    sm = boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=moto["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    rapid_env.migrate(str(etc), sm)
    sm.close()
    return world


def test_a_worker_whose_sender_cannot_start_signals_failure(migrated: World, boot: Any) -> None:
    # Given a migrated database and a release whose sender dies at start (no Twilio token)
    world = migrated
    env = dict(world.env)
    broken = boot(
        "WorkerLaunchTemplate",
        "broken-worker",
        **{
            f"TWILIO_AUTH_TOKEN={env['TwilioAuthTokenSecretArn']}": "TWILIO_AUTH_TOKEN=",
            "HEALTH_TIMEOUT_S__600": "HEALTH_TIMEOUT_S=12",
        },
    )
    # Then the boot fails on health, not on start, and the group hears it
    assert broken.returncode != 0
    assert "rapid-health: worker not healthy after 12 s" in broken.output
    sender_log = broken.file("/var/log/rapid-units/sender.log").read_text()
    assert "TWILIO_AUTH_TOKEN" in sender_log
    signals = [line for line in broken.log if line.startswith("cfn-signal")]
    assert signals == [
        f"cfn-signal --exit-code 1 --stack rapid-boot-test --resource WorkerGroup --region {REGION}"
    ]


def test_the_old_unit_would_never_start_on_a_first_boot(tmp_path: Path) -> None:
    # An EnvironmentFile written by the unit's own ExecStartPre is read before it runs: the
    # stand-in systemctl does as systemd 252 does, so the old unit fails at its first start.
    etc = tmp_path / "etc"
    etc.mkdir()
    unit = (
        "[Service]\nExecStartPre=+/usr/bin/true\nEnvironmentFile=/nonexistent/rapid/env\n"
        "ExecStart=/bin/sleep 1\n"
    )
    script = STUBS / "systemctl"
    source = script.read_text().replace('UNIT_DIR = "/etc/systemd/system"', f'UNIT_DIR = "{etc}"')
    (tmp_path / "systemctl").write_text(source)
    (etc / "rapid@.service").write_text(unit)
    (tmp_path / "instance.env").write_text("")
    result = subprocess.run(
        ["python3", str(tmp_path / "systemctl"), "start", "rapid@web.service"],
        env={
            **os.environ,
            "STUB_LOG": str(tmp_path / "log"),
            "STUB_STATE": str(tmp_path),
            "STUB_INSTANCE_ENV": str(tmp_path / "instance.env"),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "Failed to load environment files: /nonexistent/rapid/env" in result.stderr


def test_the_application_role_may_use_rows_but_not_change_the_schema(migrated: World) -> None:
    import sqlalchemy.exc

    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("://", f"://{migrated.app_role}:x@")
    app = create_engine(f"{url}/{migrated.database}")
    try:
        with app.begin() as conn:
            conn.execute(
                text("INSERT INTO alert_topics (name, created_at) VALUES ('role-check', now())")
            )
            assert conn.execute(text("SELECT count(*) FROM alert_topics")).scalar()
        for ddl in ("DROP TABLE deliveries", "CREATE TABLE sneaky (i int)", "CREATE ROLE sneaky"):
            with pytest.raises(sqlalchemy.exc.ProgrammingError), app.begin() as conn:
                conn.execute(text(ddl))
    finally:
        app.dispose()


def test_a_worker_whose_heartbeat_stops_asks_its_group_to_replace_it(tmp_path: Path) -> None:
    # Given a worker (bootstrap.conf) with no sender heartbeat, IMDS and the AWS CLI stood in
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "log"
    (stubs / "curl").write_text(
        '#!/bin/bash\ncase "$*" in *api/token*) echo tok ;; *instance-id*) echo i-0abc ;;'
        " *) exit 7 ;; esac\n"
    )
    (stubs / "aws").write_text(f'#!/bin/bash\necho "aws $*" >>{log}\n')
    (stubs / "systemctl").write_text("#!/bin/bash\nexit 0\n")  # the intake runs
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    etc = tmp_path / "upper-etc"
    mounts = []
    for top in ("etc", "run"):
        (tmp_path / f"upper-{top}").mkdir()
        (tmp_path / f"work-{top}").mkdir()
        mounts.append(
            f"mount -t overlay overlay -o lowerdir=/{top},upperdir={tmp_path / f'upper-{top}'},"
            f"workdir={tmp_path / f'work-{top}'} /{top}"
        )
    health = ROOT / "deploy" / "boot" / "rapid-health"
    script = "\n".join(
        [
            "set -e",
            *mounts,
            "mkdir -p /etc/rapid",
            "printf 'ROLE=worker\\nREGION=us-east-1\\nUNITS=rapid@sender.service\\n'"
            " >/etc/rapid/bootstrap.conf",
            "set +e",
            # When five checks fail in a row, nothing is reported yet (a failover pauses
            # every heartbeat at once)…
            *[f"bash {health} --report; echo rc=$?" for _ in range(5)],
            f"echo after-5 >>{log}",
            # …and the sixth asks for a replacement
            f"bash {health} --report; echo rc=$?",
            # A fresh heartbeat clears the strikes
            "mkdir -p /run/rapid/sender && touch /run/rapid/sender/heartbeat",
            f"bash {health} --report; echo rc=$?",
            f"bash {health}; echo check=$?",
        ]
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        env={"PATH": f"{stubs}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["rc=1"] * 6 + ["rc=0", "check=0"]
    # Then exactly one report, after the sixth, for this instance, respecting the grace period
    assert log.read_text().splitlines() == [
        "after-5",
        "aws autoscaling set-instance-health --region us-east-1 --instance-id i-0abc"
        " --health-status Unhealthy --should-respect-grace-period",
    ]
    assert not (etc / "rapid" / "env").exists()
