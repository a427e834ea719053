// cargo-fuzz builds with `--cfg fuzzing` (see digest_ok in src/reader.rs).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
