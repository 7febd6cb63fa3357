//! The `halb` binary's edges: `check-config` and a bad file at start-up.

use std::process::Command;

use halb_lab::lab::halb_bin;

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("halb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const GOOD: &str = "[node]\ninterface = \"eth0\"\n\n[[vip]]\nname = \"web\"\naddress = \"10.77.0.100\"\nport = 80\n\n  [[vip.backend]]\n  name = \"web1\"\n  address = \"10.77.0.21\"\n";

#[test]
fn check_config_says_ok_or_names_the_place() {
    let good = write("good.toml", GOOD);
    let out = Command::new(halb_bin())
        .args(["check-config", "-c"])
        .arg(&good)
        .output()
        .expect("run halb");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let bad = write(
        "bad.toml",
        &GOOD.replace("port = 80", "port = 80\nprot = 1"),
    );
    let out = Command::new(halb_bin())
        .args(["check-config", "-c"])
        .arg(&bad)
        .output()
        .expect("run halb");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:8:1:", bad.display())), "{err}");
    assert!(err.contains("unknown field `prot`"), "{err}");
}

#[test]
fn run_with_a_bad_file_exits_before_touching_anything() {
    let pins = std::path::Path::new("/sys/fs/bpf").join(format!("halb-cli-{}", std::process::id()));
    let text = GOOD.replace(
        "interface = \"eth0\"",
        &format!(
            "interface = \"eth0\"\nbpf_dir = \"{}\"\nxdp_mode = \"turbo\"",
            pins.display()
        ),
    );
    let bad = write("bad-run.toml", &text);
    let out = Command::new(halb_bin())
        .args(["run", "-c"])
        .arg(&bad)
        .output()
        .expect("run halb");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4:12:") && err.contains("turbo"), "{err}");
    assert!(!pins.exists(), "nothing was pinned");
}

#[test]
fn every_example_config_passes_check_config() {
    let mut stack = vec![halb_lab::lab::workspace().join("deploy/examples")];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                let out = std::process::Command::new(halb_lab::lab::halb_bin())
                    .args(["check-config", "-c"])
                    .arg(&p)
                    .output()
                    .expect("halb");
                assert!(
                    out.status.success(),
                    "{}: {}",
                    p.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                n += 1;
            }
        }
    }
    assert!(n >= 4, "{n} example configs");
}

/// `halb bird-config -c config`, which must succeed.
fn bird_config(config: &std::path::Path) -> String {
    let out = std::process::Command::new(halb_lab::lab::halb_bin())
        .args(["bird-config", "-c"])
        .arg(config)
        .output()
        .expect("halb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The BIRD configuration shipped in deploy/bird is what `halb bird-config`
/// renders from the shipped scale-out example, and BIRD itself parses it
/// (and the router's).
#[test]
fn the_shipped_bird_configs_are_current_and_parse() {
    let root = halb_lab::lab::workspace();
    let rendered = bird_config(&root.join("deploy/examples/scale-out/halb-lb1.toml"));
    let shipped = std::fs::read_to_string(root.join("deploy/bird/bird-lb1.conf")).expect("file");
    assert_eq!(
        rendered, shipped,
        "deploy/bird/bird-lb1.conf is stale: regenerate it with halb bird-config"
    );
    // iBGP (the router in the node's AS) with BFD renders a file BIRD takes.
    let dir = std::env::temp_dir().join(format!("halb-ibgp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let example = std::fs::read_to_string(root.join("deploy/examples/scale-out/halb-lb1.toml"))
        .expect("example");
    std::fs::write(
        dir.join("halb.toml"),
        example.replace("asn = 65000", "asn = 65001"),
    )
    .expect("write");
    std::fs::write(dir.join("bird.conf"), bird_config(&dir.join("halb.toml"))).expect("write");
    let ibgp = dir.join("bird.conf");
    for f in [
        root.join("deploy/bird/bird-lb1.conf"),
        root.join("deploy/bird/bird-router.conf"),
        ibgp,
    ] {
        let out = std::process::Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&f)
            .output()
            .expect("bird");
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
