//! The manual, one page per topic: how the layer decides and what it promises, beside the
//! API it describes. Start with [`deciding`]; the README has the quick start and the
//! configuration table.
//!
//! | page | what it covers |
//! |---|---|
//! | [`deciding`] | the admission check, cost classes, charges, the queue's order |
//! | [`priorities`] | `critical`, `normal`, `sheddable`: the queue's order and the reserve |
//! | [`rejections`] | `503`, `413` and `408`, `Retry-After`, gRPC answers, your own answers |
//! | [`slow_clients`] | the minimum body rates, and what the layer cannot see |
//! | [`cpu_bound`] | the live concurrency limit, the standing queue, room for the runtime |
//! | [`grpc`] | tonic, HTTP/2 and tower-http stacks |
//! | [`connections`] | the listener: connections counted, accepting paused, idle ones given back |
//! | [`scaling_out`] | several processes in one memory limit, replicas, Kubernetes |
//! | [`observability`] | logs, the snapshot, the metrics |
//! | [`example_server`] | the example service the load scripts drive |
//! | [`guarantees`] | what is promised, the test that shows each, and how it is tested |
//!
//! Measured figures (load scenarios, per-request cost) are dated, and live beside the
//! scripts that reproduce them: `load/README.md` and `benches/README.md` in the repository.

#[doc = include_str!("guide/deciding.md")]
pub mod deciding {}

#[doc = include_str!("guide/priorities.md")]
pub mod priorities {}

#[doc = include_str!("guide/rejections.md")]
pub mod rejections {}

#[doc = include_str!("guide/slow_clients.md")]
pub mod slow_clients {}

#[doc = include_str!("guide/cpu_bound.md")]
pub mod cpu_bound {}

#[doc = include_str!("guide/grpc.md")]
pub mod grpc {}

#[doc = include_str!("guide/connections.md")]
pub mod connections {}

#[doc = include_str!("guide/scaling_out.md")]
pub mod scaling_out {}

#[doc = include_str!("guide/observability.md")]
pub mod observability {}

#[doc = include_str!("guide/example_server.md")]
pub mod example_server {}

#[doc = include_str!("guide/guarantees.md")]
pub mod guarantees {}
