//! `cargo xtask vm up|test|down`: the halb pair on two real virtual machines
//! (qemu under software emulation, virtio-net with two queues, native XDP in
//! the guests), on a bridge inside a namespace of the lab's own, with the
//! client and three nginx backends as namespaces on the same bridge. The
//! facts this rests on are in docs/toolchain.md.
//!
//! Cached under `target/halb-vm/`: a private qemu prefix (Debian's
//! qemu-system-x86 and its libraries unpacked, since it conflicts with the
//! host's newer qemu-utils) and a Debian image built with debootstrap. Each
//! VM boots from a copy-on-write overlay of that image, gets its name and
//! address on the kernel command line, and finds the halb Debian package
//! (`cargo xtask package`), the repository's deploy/ folder and its start
//! script on a 9p share. The guests install the package with dpkg and run
//! the agent under the unit it ships.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::{backend_addr, lb_addr, neighbour_mac, run, workspace, Lab, CLIENT, VIP};

/// Debian mirror (the host's apt already uses it).
const MIRROR: &str = "http://deb.debian.org/debian";

/// Packages of the guest image.
const GUEST_PACKAGES: &str = "systemd-sysv,udev,kmod,iproute2,iputils-ping,ethtool,procps,\
nginx-light,python3,bpftool,linux-image-amd64,initramfs-tools,man-db,bash-completion,\
init-system-helpers";

/// The Debian package the guests install: `HALB_DEB`, which `cargo xtask
/// vm` sets after `cargo xtask package --debug`.
pub fn deb() -> Result<PathBuf> {
    let p = std::env::var_os("HALB_DEB").map(PathBuf::from).context(
        "HALB_DEB is not set: run this through `cargo xtask vm` (it builds the package)",
    )?;
    if !p.exists() {
        bail!("HALB_DEB {} does not exist", p.display());
    }
    Ok(p)
}

/// Where the VM lab keeps its caches.
pub fn cache_dir() -> PathBuf {
    workspace().join("target/halb-vm")
}

/// A qemu-system-x86_64 runnable from a private prefix: returns the binary,
/// its library path and its firmware directory.
pub struct Qemu {
    /// The binary.
    pub bin: PathBuf,
    /// LD_LIBRARY_PATH for it.
    pub lib: String,
    /// `-L` firmware directory.
    pub firmware: PathBuf,
}

/// Unpacks Debian's qemu-system-x86 and the libraries the host lacks into
/// a private prefix (once).
pub fn qemu() -> Result<Qemu> {
    let root = cache_dir().join("qemu");
    let q = Qemu {
        bin: root.join("usr/bin/qemu-system-x86_64"),
        lib: [
            root.join("usr/lib/x86_64-linux-gnu"),
            root.join("lib/x86_64-linux-gnu"),
        ]
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":"),
        firmware: root.join("usr/share/qemu"),
    };
    if q.bin.exists() {
        return Ok(q);
    }
    let debs = cache_dir().join("qemu-debs");
    std::fs::create_dir_all(&debs)?;
    let deps = run(Command::new("apt-cache").args([
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
        "qemu-system-x86",
    ]))?;
    let mut wanted: Vec<String> = deps
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<'))
        .map(|l| l.trim().to_string())
        .filter(|p| {
            let st = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false);
            !st
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    eprintln!(
        "vm: unpacking qemu and {} packages into {}",
        wanted.len(),
        root.display()
    );
    run(Command::new("apt-get")
        .current_dir(&debs)
        .arg("download")
        .args(&wanted))?;
    std::fs::create_dir_all(&root)?;
    for e in std::fs::read_dir(&debs)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            run(Command::new("dpkg-deb").arg("-x").arg(&p).arg(&root))?;
        }
    }
    run(Command::new(&q.bin)
        .arg("--version")
        .env("LD_LIBRARY_PATH", &q.lib))
    .context("the unpacked qemu does not run")?;
    Ok(q)
}

/// The guest image: `base.raw`, `vmlinuz`, `initrd` in the cache (built once).
pub struct Image {
    /// Root file system (raw ext4).
    pub raw: PathBuf,
    /// Kernel.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: PathBuf,
}

/// Builds the Debian guest image with debootstrap (once, ~2–3 minutes).
pub fn image() -> Result<Image> {
    let dir = cache_dir().join("image");
    let img = Image {
        raw: dir.join("base.raw"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd"),
    };
    // The image is rebuilt when its package list changes.
    let stamp = dir.join("packages");
    let same = std::fs::read_to_string(&stamp).is_ok_and(|s| s == GUEST_PACKAGES);
    if same && img.raw.exists() && img.kernel.exists() && img.initrd.exists() {
        return Ok(img);
    }
    let root = cache_dir().join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&dir)?;
    eprintln!("vm: building the guest image with debootstrap (once)");
    run(Command::new("debootstrap").args([
        "--variant=minbase",
        &format!("--include={GUEST_PACKAGES}"),
        "bookworm",
        &root.display().to_string(),
        MIRROR,
    ]))?;
    // Boot set-up: a small initrd with the virtio and 9p modules, the 9p
    // share, a serial console, and the unit that starts the node.
    std::fs::write(
        root.join("etc/initramfs-tools/modules"),
        "virtio_pci\nvirtio_blk\nvirtio_net\next4\n9pnet_virtio\n9p\n",
    )?;
    let conf = root.join("etc/initramfs-tools/initramfs.conf");
    let c = std::fs::read_to_string(&conf)?.replace("MODULES=most", "MODULES=list");
    std::fs::write(&conf, c)?;
    run(Command::new("chroot")
        .arg(&root)
        .args(["update-initramfs", "-u", "-k", "all"]))?;
    std::fs::write(
        root.join("etc/fstab"),
        "/dev/vda / ext4 defaults 0 1\nshare /mnt/share 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n",
    )?;
    std::fs::create_dir_all(root.join("mnt/share"))?;
    std::fs::write(
        root.join("etc/systemd/system/halb-node.service"),
        "[Unit]\nDescription=halb lab node (script on the 9p share)\nAfter=local-fs.target mnt-share.mount\n\
         RequiresMountsFor=/mnt/share\n\n[Service]\nType=simple\nExecStart=/bin/sh /mnt/share/node.sh\n\
         Restart=no\n\n[Install]\nWantedBy=multi-user.target\n",
    )?;
    run(Command::new("chroot").arg(&root).args([
        "systemctl",
        "enable",
        "halb-node.service",
        "serial-getty@ttyS0.service",
    ]))?;
    run(Command::new("chroot")
        .arg(&root)
        .args(["passwd", "-d", "root"]))?;
    std::fs::write(root.join("etc/hostname"), "halb-vm\n")?;
    // nginx is not needed on the load balancers.
    let _ = run(Command::new("chroot")
        .arg(&root)
        .args(["systemctl", "disable", "nginx.service"]));
    // Kernel and initrd for -kernel/-initrd.
    let boot = root.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&boot)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .with_context(|| format!("no {prefix}* in {}", boot.display()))
    };
    std::fs::copy(find("vmlinuz-")?, &img.kernel)?;
    std::fs::copy(find("initrd.img-")?, &img.initrd)?;
    let _ = std::fs::remove_file(&img.raw);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", "root", "-d"])
        .arg(&root)
        .arg(&img.raw)
        .arg("1536M"))?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::write(&stamp, GUEST_PACKAGES)?;
    Ok(img)
}

/// A running VM.
pub struct Vm {
    /// Name (lb1, lb2).
    pub name: String,
    /// Its address.
    pub addr: std::net::Ipv4Addr,
    /// Its MAC.
    pub mac: String,
    /// qemu's PID.
    pub pid: u32,
    /// Serial console log.
    pub console: PathBuf,
}

/// The guest's start script: address from the kernel command line, the
/// package installed with dpkg, the node prepared by deploy/provision.sh,
/// halb started by systemd under the unit the package ships, from the
/// example config with this VM's values. It then reports on the share
/// what a user would check: `systemctl is-active halb`, `systemctl reload`
/// (and that a broken file fails it and changes nothing), `man halb`, and
/// the bash completion loading.
const NODE_SH: &str = r#"#!/bin/sh
# Runs in each guest at boot (halb-node.service), from the 9p share.
set -eu
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
name=$(arg halb.name)
exec > "/mnt/share/$name.boot" 2>&1
set -x
addr=$(arg halb.addr)
hostname "$name"
ip link set lo up
ip addr add "$addr/24" dev eth0
ip link set eth0 up
ethtool -L eth0 combined 2 2>/dev/null || true
sed -e 's/"eth1"/"eth0"/g' \
    -e 's|/vagrant/deploy|/mnt/share/deploy|g' \
    -e "s|^listen = .*|listen = \"$addr:8480\"\ntoken_file = \"/etc/halb/token\"|" \
    "/mnt/share/deploy/examples/halb-$name.toml" > "/tmp/halb-$name.toml"
mkdir -p /etc/halb
echo halb-vm-lab-token-0123456789 > /etc/halb/token
# The package first (it enables its unit and ships a default config),
# then this node's config over that conffile.
DEBIAN_FRONTEND=noninteractive dpkg -i /mnt/share/halb.deb
bash /mnt/share/deploy/provision.sh lb --no-packages --config "/tmp/halb-$name.toml"
# The agent runs under the packaged unit (hardened: only its capabilities,
# read-only system, watchdog); its log goes to the share.
test -f /lib/systemd/system/halb.service
mkdir -p /etc/systemd/system/halb.service.d
printf '[Service]\nStandardOutput=append:/mnt/share/%s.log\nStandardError=append:/mnt/share/%s.log\n' \
    "$name" "$name" > /etc/systemd/system/halb.service.d/lab.conf
systemctl daemon-reload
echo "node $name up at $addr" > "/mnt/share/$name.ready"
systemctl start --no-block halb.service
checks="/mnt/share/$name.checks"
: > "$checks.tmp"
for i in $(seq 1 240); do
    if [ "$(systemctl is-active halb.service)" = active ]; then
        echo "systemd: halb.service active (enabled: $(systemctl is-enabled halb.service))" >> "$checks.tmp"
        break
    fi
    sleep 0.5
done
systemctl reload halb.service && echo "systemd: reload ok" >> "$checks.tmp"
cp /etc/halb/halb.toml /tmp/halb-good.toml
echo 'this is not toml =' >> /etc/halb/halb.toml
if systemctl reload halb.service; then echo "systemd: a bad file was accepted" >> "$checks.tmp"
else echo "systemd: a bad file fails the reload" >> "$checks.tmp"; fi
cp /tmp/halb-good.toml /etc/halb/halb.toml
[ "$(systemctl is-active halb.service)" = active ] && echo "systemd: still active" >> "$checks.tmp"
MANWIDTH=80 man -P cat halb 2>/dev/null | grep -q "High-availability XDP load balancer" \
    && echo "man: halb(8) renders" >> "$checks.tmp"
MANWIDTH=80 man -P cat halb-drain 2>/dev/null | grep -q "keeps its flows" \
    && echo "man: halb-drain(8) renders" >> "$checks.tmp"
bash -c '. /usr/share/bash-completion/bash_completion; . /usr/share/bash-completion/completions/halb; complete -p halb' \
    >> "$checks.tmp" 2>&1 && echo "bash: completion loads" >> "$checks.tmp"
dpkg-query -W -f='dpkg: ${Package} ${Version} ${Status}\n' halb >> "$checks.tmp"
mv "$checks.tmp" "$checks"
"#;

/// The VM lab: namespaces, share, VMs.
pub struct VmLab {
    /// The namespace lab (switch, client, backends).
    pub lab: Lab,
    /// The 9p share.
    pub share: PathBuf,
    /// Running VMs.
    pub vms: Vec<Vm>,
    qemu: Qemu,
    image: Image,
}

impl VmLab {
    /// Builds the namespaces and the share (no VM yet); `deb` is the
    /// package the guests install.
    pub fn new(deb: &Path) -> Result<Self> {
        let qemu = qemu()?;
        let image = image()?;
        let mut lab = Lab::new("vm")?;
        lab.add_host("client", CLIENT)?;
        for i in 1..=3u8 {
            lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)?;
        }
        let share = lab.dir.join("share");
        std::fs::create_dir_all(share.join("deploy/examples"))?;
        std::fs::copy(deb, share.join("halb.deb"))
            .with_context(|| format!("copy {}", deb.display()))?;
        for f in ["provision.sh", "halb.service"] {
            std::fs::copy(
                workspace().join("deploy").join(f),
                share.join("deploy").join(f),
            )?;
        }
        for f in ["halb-lb1.toml", "halb-lb2.toml", "notify.sh"] {
            std::fs::copy(
                workspace().join("deploy/examples").join(f),
                share.join("deploy/examples").join(f),
            )?;
        }
        std::fs::write(share.join("node.sh"), NODE_SH)?;
        Ok(Self {
            lab,
            share,
            vms: Vec::new(),
            qemu,
            image,
        })
    }

    /// Boots load-balancer VM `n` (1 or 2).
    pub fn boot(&mut self, n: u8) -> Result<()> {
        let name = format!("lb{n}");
        let addr = lb_addr(n);
        let mac = format!("52:54:00:77:00:{:02x}", 1 + n);
        let tap = format!("tap{n}");
        let sw = self.lab.ns("sw");
        let _ = run(Command::new("ip").args(["-n", &sw, "link", "del", &tap]));
        run(Command::new("ip").args([
            "-n",
            &sw,
            "tuntap",
            "add",
            "dev",
            &tap,
            "mode",
            "tap",
            "multi_queue",
        ]))?;
        run(Command::new("ip").args(["-n", &sw, "link", "set", &tap, "master", "br0", "up"]))?;
        let overlay = self.lab.dir.join(format!("{name}.qcow2"));
        let _ = std::fs::remove_file(&overlay);
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&self.image.raw)
            .arg(&overlay))?;
        let _ = std::fs::remove_file(self.share.join(format!("{name}.ready")));
        let console = self.lab.dir.join(format!("{name}.console"));
        let pidfile = self.lab.dir.join(format!("{name}.pid"));
        let accel = if std::env::var_os("HALB_VM_KVM").is_some() {
            "kvm"
        } else {
            "tcg"
        };
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &sw])
            .arg(&self.qemu.bin)
            .env("LD_LIBRARY_PATH", &self.qemu.lib)
            .arg("-L")
            .arg(&self.qemu.firmware)
            .args(["-M", "q35", "-accel", accel, "-m", "768", "-smp", "2", "-kernel"])
            .arg(&self.image.kernel)
            .arg("-initrd")
            .arg(&self.image.initrd)
            .arg("-append")
            .arg(format!(
                "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet halb.name={name} halb.addr={addr}"
            ))
            .arg("-drive")
            .arg(format!("file={},if=virtio", overlay.display()))
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no,queues=2"))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mq=on,vectors=6,mac={mac}"))
            .arg("-fsdev")
            .arg(format!("local,id=fs0,path={},security_model=none", self.share.display()))
            .args(["-device", "virtio-9p-pci,fsdev=fs0,mount_tag=share", "-display", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-pidfile")
            .arg(&pidfile)
            .arg("-daemonize");
        run(&mut c)?;
        let pid: u32 = std::fs::read_to_string(&pidfile)?.trim().parse()?;
        self.vms.retain(|v| v.name != name);
        self.vms.push(Vm {
            name,
            addr,
            mac,
            pid,
            console,
        });
        Ok(())
    }

    /// Waits until VM `n`'s agent has started (its script reports on the share).
    pub fn wait_ready(&self, n: u8, timeout: Duration) -> Result<Duration> {
        let name = format!("lb{n}");
        let start = Instant::now();
        let log = self.share.join(format!("{name}.log"));
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("starting VRRP") {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let console = self
                    .vms
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| v.console.clone());
                let tail = console
                    .and_then(|c| std::fs::read_to_string(c).ok())
                    .map(|t| t.lines().rev().take(30).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default();
                bail!("{name} not ready after {timeout:?}; agent log:\n{text}\nconsole (last lines, reversed):\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Kills VM `n`'s qemu (a real node death).
    pub fn kill(&mut self, n: u8) {
        let name = format!("lb{n}");
        if let Some(i) = self.vms.iter().position(|v| v.name == name) {
            let vm = self.vms.remove(i);
            // SAFETY: kill(2) on the qemu this lab started.
            unsafe {
                libc::kill(vm.pid as i32, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{}", vm.pid)).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Which VM the client's ARP entry for the VIP names.
    pub fn vip_owner(&self) -> Option<String> {
        let mac = neighbour_mac(&self.lab, "client", VIP)?;
        self.vms
            .iter()
            .find(|v| v.mac == mac)
            .map(|v| v.name.clone())
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        for n in [1u8, 2] {
            self.kill(n);
        }
    }
}

impl VmLab {
    /// Leaves the VMs and namespaces running (`vm up`); the record lets
    /// `vm down` stop them.
    pub fn persist(mut self) -> crate::lab::Persisted {
        let vms = std::mem::take(&mut self.vms);
        // Dropping `self` now kills no VM (none left in it) but would tear
        // the namespaces down: move the lab out first.
        let lab = std::mem::replace(&mut self.lab, Lab::inert());
        let mut p = lab.persist();
        p.procs
            .extend(vms.iter().map(|v| (format!("qemu-{}", v.name), v.pid)));
        p
    }
}

/// `vm up`: boots the pair and leaves it running.
pub fn up(deb: &Path, state: &Path) -> Result<()> {
    if state.exists() {
        bail!(
            "VMs are already up ({}); run `cargo xtask vm down` first",
            state.display()
        );
    }
    let mut v = VmLab::new(deb)?;
    v.boot(1)?;
    v.boot(2)?;
    v.wait_ready(1, Duration::from_secs(600))?;
    v.wait_ready(2, Duration::from_secs(600))?;
    let prefix = v.lab.prefix.clone();
    let p = v.persist();
    if let Some(d) = state.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(state, serde_json::to_string_pretty(&p)?)?;
    println!(
        "VMs up: lb1 {} and lb2 {} on the bridge in {prefix}sw; client and backends in {prefix}*",
        lb_addr(1),
        lb_addr(2)
    );
    println!("  ip netns exec {prefix}client curl -s http://{VIP}/");
    println!(
        "  ip netns exec {prefix}client curl -s http://{}:8480/api/v1/status",
        lb_addr(1)
    );
    println!("  consoles and agent logs in {}", p.dir.display());
    Ok(())
}

/// `vm down`: stops what `vm up` recorded.
pub fn down(state: &Path) -> Result<()> {
    if !state.exists() {
        println!("no VMs are up");
        return Ok(());
    }
    let p: crate::lab::Persisted = serde_json::from_str(&std::fs::read_to_string(state)?)?;
    p.teardown();
    std::fs::remove_file(state)?;
    println!("VMs down");
    Ok(())
}

/// What `vm test` measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Time until both agents ran.
    pub boot: Duration,
    /// From lb1's death until the client's ARP entry named lb2.
    pub takeover: Duration,
    /// Longest pause of the downloads across the death.
    pub stream_gap: Duration,
    /// Downloads that completed whole.
    pub streams_survived: usize,
    /// Downloads started.
    pub streams: usize,
    /// From lb1's second boot until it held the VIP again.
    pub preempt_back: Duration,
    /// Whole test.
    pub total: Duration,
    /// What each guest reported about the installed package.
    pub checks: Vec<String>,
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

fn status_of(lab: &Lab, n: u8) -> Option<halb::api::model::Status> {
    let addr = std::net::SocketAddr::from((lb_addr(n), 8480));
    lab.in_ns("client", move || {
        let c = halb::api::client::Client::new(addr, None);
        c.get("/api/v1/status")
            .ok()
            .and_then(|a| serde_json::from_str(&a.body).ok())
    })
    .ok()
    .flatten()
}

/// Boots the pair and checks it as a user would; see the module docs.
pub fn test(deb: &Path) -> Result<Report> {
    let t0 = Instant::now();
    let slow = Duration::from_secs(600);
    let mut v = VmLab::new(deb)?;
    v.boot(1)?;
    v.boot(2)?;
    v.wait_ready(1, slow)?;
    v.wait_ready(2, slow)?;
    let boot = t0.elapsed();
    eprintln!("vm: both agents running after {boot:?}");

    // The package as a user checks it, in each guest: the unit active and
    // enabled, the man pages, the bash completion.
    let mut checks = Vec::new();
    for n in 1..=2u8 {
        let path = v.share.join(format!("lb{n}.checks"));
        wait(&format!("lb{n}'s package checks"), slow, || path.exists())?;
        let text = std::fs::read_to_string(&path)?;
        for want in [
            "systemd: halb.service active (enabled: enabled)",
            "systemd: reload ok",
            "systemd: a bad file fails the reload",
            "systemd: still active",
            "man: halb(8) renders",
            "man: halb-drain(8) renders",
            "-F _halb halb",
            "bash: completion loads",
            "install ok installed",
        ] {
            if !text.contains(want) {
                bail!("lb{n}: package check {want:?} missing:\n{text}");
            }
        }
        checks.push(format!("lb{n}: {}", text.trim().replace('\n', "; ")));
    }

    // lb1 (priority 150) owns the VIP; the client learns it.
    wait("the client to reach the VIP through lb1", slow, || {
        let _ = run(v
            .lab
            .cmd("client", "ping")
            .args(["-c", "1", "-W", "1", &VIP.to_string()]));
        v.vip_owner().as_deref() == Some("lb1")
    })?;
    // lb1 reports itself master, with the program attached in driver mode
    // on the guest's virtio NIC.
    let mut last = None;
    let ok = wait(
        "lb1's API to report MASTER",
        Duration::from_secs(60),
        || {
            last = status_of(&v.lab, 1);
            last.as_ref()
                .is_some_and(|s| s.vrrp.as_ref().is_some_and(|r| r.state == "MASTER"))
        },
    );
    let st = last.context("lb1's API answers")?;
    ok.with_context(|| format!("lb1 status: {:?}", st.vrrp))?;
    if st.node.xdp_mode != "native" {
        bail!("lb1 attached XDP in {} mode, not native", st.node.xdp_mode);
    }
    // It runs under the shipped, hardened unit, with systemd's watchdog.
    let log1 = std::fs::read_to_string(v.share.join("lb1.log")).unwrap_or_default();
    if !log1.contains("systemd watchdog enabled") {
        bail!("lb1's agent does not report systemd's watchdog:\n{log1}");
    }
    // Requests reach all three backends.
    let seen = v.lab.in_ns("client", || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..60 {
            if let Ok(r) = crate::client::http_get(VIP, 80, "/", Duration::from_secs(5)) {
                seen.insert(r.body.trim().to_string());
            }
        }
        seen
    })?;
    if seen.len() != 3 {
        bail!("requests reached {seen:?}, not all three backends");
    }

    // Long downloads, then lb1's qemu is killed: a real node death.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = std::sync::mpsc::channel();
        streams.push(v.lab.spawn_in_ns("client", move || {
            crate::client::download(VIP, "/big", move |p| {
                let _ = tx.send(p);
            })
        })?);
        rx.recv_timeout(Duration::from_secs(20))
            .context("download did not start")?;
    }
    let death = Instant::now();
    v.kill(1);
    wait("the client to follow lb2", slow, || {
        v.vip_owner().as_deref() == Some("lb2")
    })?;
    let takeover = death.elapsed();
    eprintln!("vm: lb2 took over {takeover:?} after lb1's qemu was killed");
    let ok = v.lab.in_ns("client", || {
        (0..20).all(|_| crate::client::http_get(VIP, 80, "/", Duration::from_secs(5)).is_ok())
    })?;
    if !ok {
        bail!("requests fail after the takeover");
    }
    let (mut survived, mut gap) = (0, Duration::ZERO);
    let n = streams.len();
    for s in streams {
        if let Ok(Ok(Ok(d))) = s.join() {
            gap = gap.max(d.max_gap);
            if d.bytes == crate::lab::BIG_SIZE {
                survived += 1;
            }
        }
    }

    // lb1 boots again and, with preempt, takes the VIP back.
    let again = Instant::now();
    v.boot(1)?;
    v.wait_ready(1, slow)?;
    wait("lb1 to take the VIP back", slow, || {
        v.vip_owner().as_deref() == Some("lb1")
    })?;
    let preempt_back = again.elapsed();
    Ok(Report {
        boot,
        takeover,
        stream_gap: gap,
        streams_survived: survived,
        streams: n,
        preempt_back,
        total: t0.elapsed(),
        checks,
    })
}
