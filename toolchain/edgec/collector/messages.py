"""Request and response bodies of the collector API, validated with pydantic.

Every body is closed (unknown fields are refused) and strict (``true`` is not a number, ``"5"``
is not an integer), numbers are finite, every string and list is bounded, names are restricted
to a safe alphabet, and nothing a client sends is used as a file system path. The
agent's report itself is checked by the one report validator, :func:`edgec.agent.schema.check`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from edgec.agent.schema import SCHEMA_VERSION
from edgec.agent.vocab import (
    FILE_PATTERN,
    LABEL_VALUE_PATTERN,
    NAME_PATTERN,
    RUNTIME_CHOICES,
    SENSOR_CHOICES,
    SHA256_PATTERN,
)

UID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
LEASE_PATTERN = r"^[0-9a-f]{32}$"
# a job names a sensor, never the external meter command: that is the device's own --power-command
JOB_SENSORS = tuple(s for s in SENSOR_CHOICES if s != "command")

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]
FileName = Annotated[str, StringConstraints(pattern=FILE_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=4000)]
Labels = Annotated[dict[Name, LabelValue], Field(max_length=32)]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class BenchOptions(Closed):
    """What the agent's ``bench`` takes from a job. An external power command is not among them:
    only the device's own configuration (``run --power-command``) may run a command there."""

    runs: int | None = Field(None, ge=1, le=10_000_000)
    min_seconds: float | None = Field(None, ge=0, le=3600)
    warmup: int | None = Field(None, ge=0, le=1_000_000)
    threads: int | None = Field(None, ge=1, le=1024)
    batch: int | None = Field(None, ge=1, le=65536)
    power: Literal[JOB_SENSORS] | None = None  # type: ignore[valid-type]
    power_rail: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")] | None = None
    idle_seconds: float | None = Field(None, ge=0, le=600)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_count(self):
        if self.runs is not None and self.min_seconds is not None:
            raise ValueError("give runs or min_seconds, not both")
        return self


Short = Annotated[str, StringConstraints(max_length=256)]
Fraction = Annotated[float, Field(ge=-1e9, le=1e9)]


class Open(BaseModel):
    """A document with a few typed fields (those the record stores in columns); the rest is kept."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class Verification(Open):
    artifact_accuracy: Fraction | None = None
    float_accuracy: Fraction | None = None
    accuracy_drop_points: Fraction | None = None


class ArtifactRecord(Open):
    """The manifest's record of the measured artifact (other fields are kept as they are)."""

    file: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    sha256: Sha256
    bytes: int = Field(ge=0, le=2**62)
    format: Annotated[str, StringConstraints(max_length=64)] | None = None
    precision: Annotated[str, StringConstraints(max_length=64)] | None = None
    verification: Verification | None = None


class ManifestArtifact(Open):
    sha256: Short | None = None
    bytes: int | None = Field(None, ge=0, le=2**62)
    verification: Verification | None = None


class ManifestSource(Open):
    sha256: Short | None = None
    name: Short | None = None


class ManifestProfile(Open):
    id: Short | None = None
    threads: int | None = Field(None, ge=1, le=1024)


class Manifest(Open):
    """The build's manifest.json; the fields the record keeps in columns are typed."""

    target: Short | None = None
    runtime: Short | None = None
    precision: Short | None = None
    profile: ManifestProfile | None = None
    source: ManifestSource | None = None
    artifacts: Annotated[list[ManifestArtifact], Field(max_length=64)] | None = None
    verification: Verification | None = None


class JobCreate(Closed):
    """A measurement to run: uploaded files (name -> sha256), what to run, where, how often to try."""

    files: Annotated[dict[FileName, Sha256], Field(min_length=1, max_length=16)]
    target: FileName | Literal["bundle"]
    runtime: Literal[RUNTIME_CHOICES] = "auto"  # type: ignore[valid-type]
    artifact: ArtifactRecord
    manifest: Manifest
    build_dir: Annotated[str, StringConstraints(max_length=4096)] | None = None
    profile: Name | None = None
    device: Name | None = None
    labels: Labels = {}
    options: BenchOptions = BenchOptions()
    warnings: Annotated[list[Text], Field(max_length=32)] = []
    max_attempts: int = Field(3, ge=1, le=100)
    lease_seconds: float | None = Field(None, ge=1, le=86400)
    timeout_s: float = Field(600, ge=1, le=86400)

    @model_validator(mode="after")
    def _consistent(self):
        if not self.profile and not self.device:
            raise ValueError("give a profile (any device of that profile) or a device id")
        if self.target == "bundle":
            if not any(name.startswith("bundle/") for name in self.files):
                raise ValueError("target 'bundle' needs bundle/... files")
        elif self.target not in self.files:
            raise ValueError(f"target '{self.target}' is not among the files")
        if self.artifact.sha256 not in self.files.values():
            raise ValueError("artifact.sha256 is not the sha256 of any of the files")
        return self


class Register(Closed):
    """An agent introduces its device: what it is and what it can run."""

    device: Name
    instance: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    profile: Name | None = None
    labels: Labels = {}
    runtimes: Annotated[dict[Literal[RUNTIME_CHOICES[1:]], Annotated[str, StringConstraints(max_length=64)] | None],  # type: ignore[valid-type]
                        Field(max_length=8)] = {}
    power: dict[str, Any] = {}
    detected: dict[str, Any] = {}
    agent_version: Annotated[str, StringConstraints(max_length=32)] | None = None
    schema_version: int

    @field_validator("schema_version")
    @classmethod
    def _same_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"the agent writes report schema {value}, this collector reads {SCHEMA_VERSION}; "
                             "install the same edgec version on both sides ('edgec agent bundle')")
        return value


class LeaseRequest(Closed):
    instance: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    wait: float = Field(0, ge=0, le=60, description="seconds to wait for a job (long poll)")


class Heartbeat(Closed):
    instance: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    leases: Annotated[list[Annotated[str, StringConstraints(pattern=LEASE_PATTERN)]], Field(max_length=16)] = []


Instance = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class ResultPost(Closed):
    """An agent's report for its lease; ``uid`` is generated by the agent once per job attempt,
    ``instance`` is the agent instance that holds the lease (only its result is stored)."""

    uid: Annotated[str, StringConstraints(pattern=UID_PATTERN)]
    job_id: int = Field(ge=1, le=2**62)
    lease_id: Annotated[str, StringConstraints(pattern=LEASE_PATTERN)]
    device: Name
    instance: Instance
    report: dict[str, Any]


class Failure(Closed):
    """An agent could not run its job; ``retry`` says whether another attempt may succeed."""

    lease_id: Annotated[str, StringConstraints(pattern=LEASE_PATTERN)]
    device: Name
    error: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    retry: bool = False
    instance: Instance | None = None


class EnrollRequest(Closed):
    expires_s: float | None = Field(None, ge=60, le=90 * 86400, description="how long the token may be used")


class Exchange(Closed):
    """An agent trades its enrollment token (sent as the bearer token) for its device's credential."""

    device: Name


# ---------------------------------------------------------------------- responses (documented)


class Problem(BaseModel):
    detail: Any


class BlobStored(BaseModel):
    sha256: str
    bytes: int
    created: bool


class ResultStored(BaseModel):
    result_id: int
    job_id: int
    duplicate: bool


class LeaseGranted(BaseModel):
    job_id: int
    lease_id: str
    attempt: int
    max_attempts: int
    lease_seconds: float
    lease_expires: float
    heartbeat_s: float
    files: dict[str, str]
    target: str
    runtime: str
    options: dict[str, Any]
    timeout_s: float
    artifact_sha256: str


class HeartbeatAnswer(BaseModel):
    leases: dict[str, Literal["active", "lost"]]


class EnrollmentIssued(BaseModel):
    device: str
    enrollment_token: str
    expires: float


class CredentialIssued(BaseModel):
    device: str
    credential: str


class Revoked(BaseModel):
    device: str
    revoked: int
    released: list[int]
