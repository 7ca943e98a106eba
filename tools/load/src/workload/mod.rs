//! The workloads whatever the server: what `connect`, `chat`, `fanout` and `offline` offer,
//! measure, report and check, written once for the Missive scenarios and their MQTT peers
//! (`mqtt connect|chat|fanout|offline`), which keep only how they connect, send and receive.
//! Same pacing, same figures under the same keys, same checks on both sides: what one side
//! reports that the other cannot (Missive's inbox read-back, a broker's keep-alive) is said by
//! the side, in the report's place for it.

pub mod chat;
pub mod connect;
pub mod fanout;
pub mod offline;
pub mod pace;
pub mod tally;
