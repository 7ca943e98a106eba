//! Compiles `proto/missive.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["missive.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    config.type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]");
    config.message_attribute(".", "#[serde(default, deny_unknown_fields)]");
    for field in [
        "missive.v1.Message.content",
        "missive.v1.Send.content",
        "missive.v1.Contacts.cursor",
        "missive.v1.ContactsAck.next_cursor",
        "missive.v1.Signal.payload",
        "missive.v1.SignalNotify.payload",
        "missive.v1.Readers.cursor",
        "missive.v1.ReadersAck.next_cursor",
    ] {
        config.field_attribute(field, "#[serde(with = \"crate::hexbytes\")]");
    }
    config.compile_fds(fds)?;
    Ok(())
}
