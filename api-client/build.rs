//! Registers the API's schema with cynic, so every operation in this crate is checked
//! against it when the crate compiles.

fn main() {
    println!("cargo:rerun-if-changed=../api/schema.graphql");
    cynic_codegen::register_schema("market")
        .from_sdl_file("../api/schema.graphql")
        .expect("api/schema.graphql parses")
        .as_default()
        .expect("the market schema registers as the default");
}
