//! The HTML report in a real browser: Debian's headless Chromium loads the page
//! rendered from a replayed incident (a leak and a retry storm), runs its table
//! sorter without a console error, and draws the charts.
//!
//! Needs `chromium` (`cargo xtask setup` installs it); no root, no probes.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use connwatch::model::{
    Activity, CloseKind, ConnKey, Event, HostSnapshot, InfoFields, Report, Totals,
};
use connwatch::report::html::render_html;
use connwatch_tests::TempDir;

use connwatch::testing::{MS, SEC, START, Sim, busy, conn, redis_ok};

const SECONDS: u64 = 45;

/// A pool of 8 busy connections from 10.0.0.10, a leak of one idle connection a
/// second from 10.0.0.66, and a retry storm from 10.0.0.20 (50 rejected attempts
/// a second, 1 ms apart) from 20 s to 26 s, under maxclients 100.
fn incident() -> Vec<Event> {
    let mut ev = vec![Event::Host {
        ts: START,
        snapshot: Box::new(HostSnapshot {
            nofile_soft: Some(10_032),
            nofile_hard: Some(10_032),
            pid: Some(4242),
            somaxconn: Some(4096),
            ..HostSnapshot::default()
        }),
    }];
    let pool: Vec<ConnKey> = (1..=8).map(|p| conn("10.0.0.10", 10_000 + p)).collect();
    ev.extend(pool.iter().map(|&key| Event::Opened {
        ts: START + 100 * MS,
        key,
    }));
    for i in 1..=SECONDS {
        let ts = START + i * SEC;
        ev.push(busy(&pool, i, ts));
        let info = InfoFields {
            version: Some("7.0.15".into()),
            role: Some("master".into()),
            connected_clients: Some(8 + i + 35),
            ..InfoFields::default()
        };
        ev.push(redis_ok(ts - 10 * MS, 100, info));
    }
    for k in 0..SECONDS as u16 {
        ev.push(Event::Opened {
            ts: START + u64::from(k) * SEC + 500 * MS,
            key: conn("10.0.0.66", 40_000 + k),
        });
    }
    let mut port = 20_000u16;
    for s in 20..26u64 {
        let mut at = START + s * SEC + 300 * MS;
        for _ in 0..50 {
            let key = conn("10.0.0.20", port);
            ev.push(Event::Opened { ts: at, key });
            ev.push(Event::Closed {
                ts: at + 200_000,
                key,
                how: CloseKind::Server,
                activity: Some(Activity {
                    bytes_in: 0,
                    bytes_out: 36,
                    last_active: None,
                    queued: None,
                }),
            });
            port += 1;
            at += 200_000 + MS;
        }
    }
    ev
}

/// The events through the pipeline, one report a second.
fn replay(events: Vec<Event>) -> Vec<Report> {
    Sim::new(events).run(SECONDS as usize)
}

/// Headless Debian Chromium with a fresh profile, nothing fetched in the background,
/// console messages logged to stderr.
fn chromium(profile: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run chromium ({e}): install Debian's package with `cargo xtask setup` \
             (apt-get install -y chromium)"
        ),
    }
}

/// Lines of Chromium's stderr that report a page error: uncaught exceptions and
/// console messages (the page writes none of its own).
fn page_errors(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("Uncaught") || l.contains("CONSOLE"))
        .map(str::to_owned)
        .collect()
}

fn file_url(path: &Path, fragment: &str) -> String {
    format!("file://{}{fragment}", path.display())
}

struct Page {
    _dir: TempDir,
    dir: PathBuf,
    html: PathBuf,
    reports: Vec<Report>,
}

fn page() -> Page {
    let dir = TempDir::new("html");
    let reports = replay(incident());
    let html = dir.0.join("report.html");
    std::fs::write(
        &html,
        render_html(&reports, "connwatch — incident on cache-1"),
    )
    .expect("write the report");
    Page {
        dir: dir.0.clone(),
        _dir: dir,
        html,
        reports,
    }
}

#[test]
fn the_incident_has_the_verdicts_the_page_is_about() {
    let reports = replay(incident());
    let kinds: Vec<String> = reports
        .iter()
        .flat_map(|r| &r.verdicts)
        .map(|v| format!("{:?}", v.kind))
        .collect();
    assert!(kinds.iter().any(|k| k == "Leak"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "RetryStorm"), "{kinds:?}");
    let t: &Totals = &reports[SECONDS as usize - 1].totals;
    assert_eq!(t.rejected, 300);
}

#[test]
fn console_errors_are_caught_by_this_test() {
    // The check below must be able to fail: a page that throws shows in stderr.
    let dir = TempDir::new("html-control");
    let page = dir.0.join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>no_such_function();</script></body></html>",
    )
    .expect("write");
    let out = chromium(
        &dir.0.join("profile"),
        &["--dump-dom", &file_url(&page, "")],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        page_errors(&out.stderr)
            .iter()
            .any(|l| l.contains("no_such_function")),
        "chromium did not report the error:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_report_renders_in_headless_chromium_with_its_charts() {
    let page = page();
    let png = page.dir.join("report.png");
    // Tall enough to hold the whole page, charts included.
    let out = chromium(
        &page.dir.join("profile-shot"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,4800",
            &file_url(&page.html, ""),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chromium failed: {:?}\n{stderr}",
        out.status
    );
    assert_eq!(page_errors(&out.stderr), Vec::<String>::new(), "{stderr}");

    let image = Png::read(&png);
    assert_eq!((image.width, image.height), (1400, 4800));
    // A blank page has one or two colours; this one has text, badges, charts.
    let colours = image.colours();
    assert!(colours.len() > 200, "{} colours", colours.len());
    // Drawn lines, not just legend swatches (22×3 px): the top address's line in
    // the open-connections chart and the capacity line.
    for (name, rgb) in [("open #1f77b4", 0x1f77b4), ("capacity #1f5fa8", 0x1f5fa8)] {
        let n = colours.get(&rgb).copied().unwrap_or(0);
        assert!(n > 500, "{name}: {n} pixels");
    }
    // The critical red of the badges, verdict borders, rejection lane and bands.
    assert!(colours.get(&0xc62828).copied().unwrap_or(0) > 500);
}

#[test]
fn the_client_table_sorts_in_the_browser() {
    let page = page();
    let out = chromium(
        &page.dir.join("profile-dom"),
        &["--dump-dom", &file_url(&page.html, "#sort=bytes_out")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chromium failed: {:?}\n{stderr}",
        out.status
    );
    assert_eq!(page_errors(&out.stderr), Vec::<String>::new(), "{stderr}");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-sortable=\"ready\""),
        "the sorter did not run"
    );
    assert!(dom.contains("data-key=\"bytes_out\" data-type=\"num\""));
    // A numeric column sorts largest first.
    assert!(dom.contains("aria-sort=\"descending\""));

    // Rows in the order the script left them: most bytes written first.
    let shown: Vec<&str> = dom
        .split("<tr class=\"client ")
        .skip(1)
        .filter_map(|row| row.split("data-v=\"").nth(1)?.split('"').next())
        .collect();
    let mut last = page.reports[SECONDS as usize - 1].clients.clone();
    last.sort_by_key(|c| std::cmp::Reverse(c.bytes_out));
    let expected: Vec<String> = last.iter().map(|c| c.addr.to_string()).collect();
    assert_eq!(shown, expected);
    // Worst first in the file: the script, not the page, put them in this order.
    let html = std::fs::read_to_string(&page.html).expect("read");
    let first_in_file = html
        .split("<tr class=\"client ")
        .nth(1)
        .and_then(|row| row.split("data-v=\"").nth(1)?.split('"').next())
        .map(str::to_owned);
    assert_eq!(first_in_file.as_deref(), Some("10.0.0.66"));
    assert_ne!(shown.first().copied(), Some("10.0.0.66"));
}

/// Just enough of PNG to count colours: 8-bit RGB or RGBA, not interlaced (what
/// Chromium writes).
struct Png {
    width: usize,
    height: usize,
    channels: usize,
    pixels: Vec<u8>,
}

impl Png {
    fn read(path: &Path) -> Png {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let (mut width, mut height, mut channels) = (0, 0, 0);
        let mut idat = Vec::new();
        let mut at = 8;
        while at + 8 <= data.len() {
            let len = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = &data[at + 4..at + 8];
            let body = &data[at + 8..at + 8 + len];
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(body[0..4].try_into().expect("4")) as usize;
                    height = u32::from_be_bytes(body[4..8].try_into().expect("4")) as usize;
                    assert_eq!(body[8], 8, "bit depth");
                    channels = match body[9] {
                        2 => 3,
                        6 => 4,
                        other => panic!("colour type {other}"),
                    };
                    assert_eq!(body[12], 0, "interlaced");
                }
                b"IDAT" => idat.extend_from_slice(body),
                b"IEND" => break,
                _ => {}
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .expect("inflate");
        let stride = width * channels;
        assert_eq!(raw.len(), height * (stride + 1), "image data size");
        let mut pixels = vec![0u8; height * stride];
        for y in 0..height {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= channels {
                    pixels[y * stride + x - channels]
                } else {
                    0
                };
                let b = if y > 0 {
                    pixels[(y - 1) * stride + x]
                } else {
                    0
                };
                let c = if x >= channels && y > 0 {
                    pixels[(y - 1) * stride + x - channels]
                } else {
                    0
                };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    4 => paeth(a, b, c),
                    other => panic!("filter {other}"),
                };
                pixels[y * stride + x] = line[x].wrapping_add(predicted);
            }
        }
        Png {
            width,
            height,
            channels,
            pixels,
        }
    }

    /// Pixels per 0xRRGGBB colour.
    fn colours(&self) -> HashMap<u32, usize> {
        let mut counts = HashMap::new();
        for px in self.pixels.chunks_exact(self.channels) {
            let rgb = u32::from(px[0]) << 16 | u32::from(px[1]) << 8 | u32::from(px[2]);
            *counts.entry(rgb).or_insert(0) += 1;
        }
        counts
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
