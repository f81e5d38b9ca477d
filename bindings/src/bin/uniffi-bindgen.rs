//! UniFFI's bindings generator, built from the same uniffi version as the library so that the
//! generated Swift and Kotlin always match the scaffolding. Run through `scripts/gen-bindings.sh`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
