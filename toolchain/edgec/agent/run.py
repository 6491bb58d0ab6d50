"""``edgec-agent run``: the command line's options made into a :class:`~.daemon.Daemon`: the token
or this device's own credential (traded once for an enrollment token, then kept in a file
readable by this user only), the device's name, profile and labels, the work directory.

Standard library only, Python 3.6 syntax, like the rest of the agent.
"""

import logging
import os
import re
import socket

from . import device
from .api import AgentRefused, Api, Unreachable
from .capabilities import guess_profile, parse_labels
from .daemon import Daemon
from .errors import AgentError
from .vocab import NAME_PATTERN

log = logging.getLogger(__name__)

NAME = re.compile(NAME_PATTERN)


def default_credential_file(name):
    """Where the agent keeps the credential of device ``name`` (``$EDGEC_AGENT_CONFIG``, else
    ``~/.config/edgec-agent``)."""
    root = os.environ.get("EDGEC_AGENT_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "edgec-agent")
    return os.path.join(root, name + ".credential")


def _read_secret(path, what):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError as exc:
        raise AgentError("cannot read %s %s: %s" % (what, path, exc)) from exc


def write_private(path, text):
    """Write ``text`` to ``path`` readable by this user only (0600, directory 0700), atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


def enroll(api, name, path):
    """Trade the enrollment token ``api`` carries for this device's own credential, kept in ``path``.

    Raises:
        AgentError: the collector refused the token or cannot be reached.
    """
    try:
        answer = api.call("POST", "/enroll", {"device": name})
    except Unreachable as exc:
        raise AgentError("cannot reach the collector to enroll '%s': %s" % (name, exc)) from exc
    doc = answer.json() or {}
    if answer.status != 201 or not doc.get("credential"):
        raise AgentRefused("the collector refused to enroll '%s' (%d): %s" % (name, answer.status, answer.detail()))
    write_private(path, doc["credential"])
    log.info("enrolled as '%s': credential kept in %s (mode 0600)", name, path)
    return doc["credential"]


def main(args):
    """``run`` subcommand: parsed argparse namespace -> exit code."""
    token = args.token or os.environ.get("EDGEC_TOKEN", "").strip()
    if args.token_file:
        token = _read_secret(args.token_file, "--token-file")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", args.server or ""):
        raise AgentError("--server %r: expected http://HOST:PORT (the URL 'edgec serve' prints)" % args.server)
    name = args.name or socket.gethostname().split(".")[0] or "device"
    if not NAME.match(name):
        raise AgentError("device name %r: expected 1-64 letters, digits, '.', '_' or '-' (pass --name)" % name)
    credential_file = args.credential_file or default_credential_file(name)
    enroll_token = args.enroll_token
    if args.enroll_token_file:
        enroll_token = _read_secret(args.enroll_token_file, "--enroll-token-file")
    if enroll_token and not token:
        if os.path.exists(credential_file):
            log.info("already enrolled: using the credential in %s", credential_file)
            token = _read_secret(credential_file, "credential file")
        else:
            token = enroll(Api(args.server, enroll_token, cafile=args.cafile), name, credential_file)
    elif not token and os.path.exists(credential_file):
        token = _read_secret(credential_file, "credential file")
    if not token:
        raise AgentError("no token: pass --enroll-token-file FILE (from 'edgec devices enroll %s'), --token-file "
                         "FILE (a copy of the collector's token file), --token TOKEN or set EDGEC_TOKEN" % name)
    labels = parse_labels(args.labels)
    profile, source = args.profile, "given"
    if not profile:
        profile, source = guess_profile(device.detect(args.root)), "detected"
        if profile is None:
            source = "none"
            log.warning("no device profile given or recognized: only jobs addressed to '%s' will come "
                        "(pass --profile ID)", name)
    elif not NAME.match(profile):
        raise AgentError("--profile %r: expected a profile id such as rpi5 or jetson-orin-nano" % profile)
    work_dir = args.work_dir or os.path.join(os.environ.get("EDGEC_AGENT_CACHE")
                                             or os.path.join(os.path.expanduser("~"), ".cache", "edgec-agent"),
                                             "run", name)
    api = Api(args.server, token, cafile=args.cafile)
    daemon = Daemon(api, name, profile=profile, labels=labels, work_dir=work_dir, wait=args.wait,
                    max_jobs=args.max_jobs, power_command=args.power_command, root=args.root, profile_source=source)
    return daemon.run()
