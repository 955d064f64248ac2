//! Effectful step executors for Morpheus.
//!
//! An executor performs one effect on behalf of a workflow step. It gets an
//! [`ExecRequest`](morpheus_engine::ExecRequest) (idempotency key, deadline, JSON
//! payload, log sink) and answers with JSON or a
//! [`StepError`](morpheus_engine::StepError) whose variant tells the engine whether a
//! retry can help. Register executors once at startup:
//!
//! ```no_run
//! use morpheus_engine::ExecutorRegistry;
//! use morpheus_executors::ProcessExecutor;
//!
//! let mut registry = ExecutorRegistry::new();
//! registry.register(ProcessExecutor::new());
//! registry.register(morpheus_executors::DockerExecutor::new());
//! ```
//!
//! # `process`: run a local command
//!
//! [`ProcessExecutor`] runs `/bin/sh -c <command>`. Payload ([`ProcessRequest`]):
//!
//! ```json
//! {"command": "make deploy", "env": {"STAGE": "prod"}, "cwd": "/srv/app", "timeout_s": 600}
//! ```
//!
//! - stdout lines go to the step's logs at `info`, stderr lines at `warn`, as they are
//!   written (fields `{"stream": "stdout"|"stderr"}`).
//! - `MORPHEUS_IDEMPOTENCY_KEY` is set to the request's idempotency key, which stays the
//!   same across retries and re-executions, so a script can make its effect
//!   exactly-once (e.g. `docker run --name "$MORPHEUS_IDEMPOTENCY_KEY"`).
//! - Exit code 0 gives a [`ProcessOutput`]. A non-zero exit, a signal or a timeout is
//!   `Retryable` (the step's retry policy decides how often to try again); a bad
//!   payload, a missing `cwd` or a shell that cannot be started is `Permanent`.
//! - The command runs in its own process group. The whole group is killed on timeout,
//!   when the call's future is dropped (run cancelled, lease lost), and when the
//!   command exits (so background jobs it leaves behind cannot run beside the next
//!   attempt). The shell also gets `SIGKILL` if the worker process dies (processes the
//!   shell forked do not; see [`process`]). Detach deliberately with `setsid`, and
//!   redirect its output, if a process must outlive its step.
//!
//! # `docker`: sandbox containers
//!
//! [`DockerExecutor`] drives a Docker engine through bollard: create-or-adopt a
//! container by name and labels, upload an archive, run commands with their output
//! streamed into the step's logs, start a long-running command, inspect, remove, list
//! by label. Every operation is safe to repeat under the same idempotency key; see
//! [`docker`] for the payloads ([`DockerRequest`]) and error classes.
//!
//! The same executor builds and pushes images ([`DockerExecutor::build_and_push`]):
//! the build context as a tar, the Dockerfile and a content-named tag in, the image by
//! digest out, reusing what the registry or the engine already has; see
//! [`image_build`].
//!
//! # `cosmos`: Akash chain reads and exactly-once escrow deposits
//!
//! [`CosmosExecutor`] reads chain state (latest height, accounts, balances,
//! deployments with escrow funds, lease rates) and signs and broadcasts escrow
//! deposits over a node's REST API. Signing and broadcasting are separate operations
//! so a workflow can journal the signed bytes before sending them; see [`cosmos`] for
//! the payloads, outputs, errors and the exactly-once recipe.

//!
//! # `sealed`: secrets encrypted to a public key
//!
//! Not an executor: [`sealed`] seals and opens `sealed:v1:<base64>` values (ECIES on
//! secp256k1 in the `ecies` crate's and eciesjs's format), so a deploy spec can carry a
//! secret that only the worker holding the key opens.

#![warn(missing_docs)]

pub mod audit;
pub mod cosmos;
pub mod docker;
pub mod duration_text;
pub mod evm;
pub mod extensions;
pub mod image_build;
pub mod key_source;
mod lines;
pub mod process;
pub mod sealed;

pub use cosmos::{CosmosConfig, CosmosExecutor, CosmosRequest};
pub use docker::{DockerExecutor, DockerRequest};
pub use process::{ProcessExecutor, ProcessOutput, ProcessRequest};
