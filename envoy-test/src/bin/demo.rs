//! `make run`: a guided tour of what fallback-config does, on real servers.
//!
//! It starts a local S3 server, a fake control plane and an upstream, lets a
//! first Envoy export the control plane's config to S3, takes the control
//! plane down, and shows that a brand-new Envoy still routes traffic using
//! the config it imported from S3. Exit code 0 only if all of that worked.

use envoy_test::envoy::Envoy;
use envoy_test::stack::{self, Stack, BUCKET, ECHO};
use envoy_test::wait::TIMEOUT;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!(
                "\nDemo finished: the new gateway served traffic while the control plane was down."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn show_log_tail(envoy: &Envoy) -> String {
    format!(
        "\nlast lines of {}'s log:\n{}",
        envoy.name(),
        envoy.log_tail(20)
    )
}

fn run() -> Result<(), String> {
    use envoy_test::bins;
    bins::check(
        "Envoy binary",
        bins::ENVOY_BIN,
        &bins::envoy_path(),
        "Envoy 1.40.0",
    )?;
    bins::check(
        "s3s-fs binary",
        bins::S3S_FS_BIN,
        &bins::s3s_fs_path(),
        "s3s-fs 0.17.0",
    )?;
    bins::check(
        "fallback-config wasm module",
        bins::FALLBACK_CONFIG_WASM,
        &bins::wasm_path(),
        "build the filter first",
    )?;

    println!(
        "fallback-config demo: a gateway that keeps working when its control plane is down.\n"
    );
    println!("Starting the local servers (all on 127.0.0.1, files under envoy-test/work/demo-<pid>/,\n   removed at the end unless ENVOY_TEST_KEEP=1) ...");
    let stack = Stack::new("demo", true);
    println!(
        "1. Started a local S3 server (s3s-fs) on 127.0.0.1:{} with bucket \"{BUCKET}\".\n   It checks every request's AWS SigV4 signature, like real S3.",
        stack.s3().port()
    );
    println!(
        "2. Started a fake control plane on 127.0.0.1:{} serving GET /v1/config:",
        stack.cp.port()
    );
    for line in stack.cp.config().unwrap_or_default().lines() {
        println!("     {line}");
    }
    println!(
        "3. Started an upstream service \"{ECHO}\" on 127.0.0.1:{}; it answers \"{ECHO} <path>\".",
        stack.echo.port()
    );

    println!("\n4. Starting Envoy #1, the EXPORTER (export on): it polls the control plane and");
    println!(
        "   writes every new config revision to {}/0.1.0/config.json ...",
        stack.storage_url()
    );
    let mut exporter = stack.start_envoy("exporter", &stack.exporter_plugin("demo-exporter"));
    println!(
        "   Envoy #1 is up: listener 127.0.0.1:{}, admin 127.0.0.1:{}.",
        exporter.port(),
        exporter.admin_port()
    );
    let env = stack
        .wait_envelope("r1", TIMEOUT)
        .map_err(|e| format!("{e}{}", show_log_tail(&exporter)))?;
    println!(
        "   Stored object {}:",
        stack
            .s3()
            .object_path(BUCKET, &stack.object_key())
            .display()
    );
    println!("     format      {}", env.format);
    println!("     version     {}", env.version);
    println!("     revision    {}", env.revision);
    println!("     exported_at {}", env.exported_at);
    println!("     exporter    {}", env.exporter);
    println!("     sha256      {}", env.sha256);
    println!(
        "     config      {} bytes, the control plane's JSON verbatim",
        env.config_raw.len()
    );
    let expected_sha = envoy_test::sha256::hex(env.config_raw.as_bytes());
    if env.sha256 != expected_sha {
        return Err(format!(
            "sha256 field {} != sha256 of config {expected_sha}",
            env.sha256
        ));
    }
    let r = exporter
        .get("/echo/hello", &[])
        .map_err(|e| e.to_string())?;
    println!(
        "   A request through Envoy #1: GET /echo/hello -> {} \"{}\"",
        r.status,
        r.text()
    );

    println!("\n5. Stopping Envoy #1 and taking the control plane DOWN (its port now refuses connections).");
    exporter.stop();
    stack.cp.down();

    println!(
        "\n6. Starting Envoy #2, a brand-new IMPORTER (import on). Its first control-plane fetch"
    );
    println!("   fails, so it reads the stored config from S3 (retrying with backoff if that fails), checks its version and sha256, and uses it ...");
    let mut importer = stack.start_envoy("importer", &stack.importer_plugin());
    let line = importer
        .wait_log("imported revision r1", TIMEOUT)
        .map_err(|e| format!("{e}{}", show_log_tail(&importer)))?;
    let msg = line.rsplit("fallback_config: ").next().unwrap_or(&line);
    println!("   Envoy #2 logged: \"{msg}\"");
    let r = stack::wait_status(
        &importer,
        "/echo/hello",
        200,
        std::time::Duration::from_secs(3),
    )
    .map_err(|e| format!("{e}{}", show_log_tail(&importer)))?;
    println!(
        "   GET /echo/hello through Envoy #2 -> {} \"{}\"",
        r.status,
        r.text()
    );
    if r.text() != format!("{ECHO} /echo/hello") {
        return Err(format!("unexpected body {:?}", r.text()));
    }
    let reads = importer.upstream_rq_total("object_storage");
    println!("   Envoy #2 made {reads} request(s) to object storage (stat cluster.object_storage.upstream_rq_total).");
    importer.check_alive()?;

    println!("\n7. Cleaning up: stopping Envoy #2, the control plane, the upstream and s3s-fs.");
    drop(importer);
    drop(stack);
    Ok(())
}
