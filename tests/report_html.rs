//! `report.html` rendered by a real headless Chromium: the page loads
//! without script errors, draws one timeline lane per attributed process of
//! the sample bundle, and the screenshot is not blank. Needs Debian's
//! `chromium` (installed by `.ci/run`); says SKIPPED without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("procflow-html-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            let ok = Command::new(b)
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            ok.then(|| PathBuf::from(b))
        })
}

/// Runs headless Chromium on `page`: (dumped DOM, stderr, screenshot bytes).
fn render(browser: &Path, page: &Path, dir: &Path) -> (String, String, Vec<u8>) {
    let profile = dir.join(format!(
        "profile-{}",
        page.file_stem().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let shot = dir.join(format!(
        "{}.png",
        page.file_stem().unwrap().to_string_lossy()
    ));
    let out = Command::new("timeout")
        .arg("120")
        .arg(browser)
        .args([
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
            "--window-size=1300,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_default();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        png,
    )
}

/// Analyzes the sample bundle of periodic reads (`testdata/compat/`): its 28
/// flows fit the flow table's first page, which the checks below read.
fn analyze_sample(dir: &Path) -> PathBuf {
    analyze_bundle(dir, "testdata/sample-bundle", "r")
}

/// Analyzes `bundle` (relative to the repository) into `dir/name`.
fn analyze_bundle(dir: &Path, bundle: &str, name: &str) -> PathBuf {
    let out = dir.join(name);
    let o = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .current_dir(root())
        .args(["analyze", bundle, "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    // 3: done, but the evidence has findings (the compat bundle's recorder
    // lost event samples, which analyze says aloud).
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The page references nothing outside itself.
#[test]
fn report_is_self_contained() {
    let dir = scratch("self");
    let out = analyze_sample(&dir);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "src=",
        "href=",
        "<link",
        "@import",
        "url(",
        "fetch(",
        "XMLHttpRequest",
    ] {
        assert!(!html.contains(needle), "report.html contains {needle:?}");
    }
    assert!(html.contains("default-src 'none'"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The embedded data of the page.
fn page_data(html: &str) -> serde_json::Value {
    let start = html
        .find("id=\"procflow-data\">")
        .expect("the data element")
        + "id=\"procflow-data\">".len();
    let end = start + html[start..].find("</script>").expect("its end");
    serde_json::from_str(&html[start..end]).expect("the data is JSON")
}

/// Each evidence finding is worded once: the page, summary.json and the
/// terminal's evidence status carry the same sentence; the verdict is the
/// terminal's; recorder errors a finding words are not repeated as JSON.
#[test]
fn page_words_findings_as_the_terminal_does() {
    let dir = scratch("words");
    let out = dir.join("r");
    let o = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .current_dir(root())
        // The sample before per-send evidence: its recorder lost event
        // samples, a finding.
        .args([
            "analyze",
            "testdata/compat/sample-bundle-v2-events",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let data = page_data(&std::fs::read_to_string(out.join("report.html")).unwrap());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let in_page = data["evidence"]["findings"].as_array().unwrap();
    let in_summary = summary["evidence"]["findings"].as_array().unwrap();
    assert_eq!(in_page.len(), 1);
    assert_eq!(in_page.len(), in_summary.len());
    for (p, s) in in_page.iter().zip(in_summary) {
        let m = p["message"].as_str().unwrap();
        assert_eq!(Some(m), s["message"].as_str());
        assert!(stderr.contains(&format!("procflow:     {m}")), "{stderr}");
    }
    assert_eq!(data["evidence"]["ok"], false);
    assert_eq!(data["evidence"]["failed"], serde_json::json!(["recorder"]));
    assert!(stdout.contains("FAILED: recorder"), "{stdout}");
    // The lost events are the finding; not again as a raw recorder error.
    assert_eq!(data["recorder"]["errors"], serde_json::json!([]));
    // Every flow of the sample fits in the page.
    assert_eq!(data["totals"]["flows_in_page"], data["totals"]["flows"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chromium_renders_report() {
    let Some(browser) = chromium() else {
        common::missing("chromium not installed (apt-get install chromium)");
        return;
    };
    let dir = scratch("render");
    let out = analyze_sample(&dir);
    let page = out.join("report.html");
    let (dom, log, png) = render(&browser, &page, &dir);
    assert!(
        dom.contains("data-rendered=\"ok\""),
        "the page's script did not finish; stderr:\n{log}"
    );
    assert!(!dom.contains("data-error="), "script error in the page");
    for line in log.lines() {
        assert!(
            !(line.contains("CONSOLE") && (line.contains("Uncaught") || line.contains("Error"))),
            "console error: {line}"
        );
        assert!(
            !line.contains("Refused to"),
            "content security policy blocked something: {line}"
        );
    }
    // One lane per attributed process (processes.csv rows with a pid).
    let csv = std::fs::read_to_string(out.join("processes.csv")).unwrap();
    let processes = csv
        .lines()
        .skip(1)
        .filter(|l| l.split(',').next().is_some_and(|pid| !pid.is_empty()))
        .count();
    let lanes = dom.matches("class=\"lane\" data-kind=\"process\"").count();
    assert!(processes > 3, "sample bundle has {processes} processes");
    assert_eq!(lanes, processes, "timeline lanes vs processes.csv");
    assert_eq!(
        dom.matches("class=\"lane\" data-kind=\"unattributed\"")
            .count(),
        1
    );
    // The flow table shows every flow, 100 per page.
    let flows = std::fs::read_to_string(out.join("connections.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    let pages = flows.div_ceil(100);
    assert!(dom.contains(&format!("{flows} of {flows} flows, page 1 of {pages}")));
    // The evidence as the terminal words it: the verdict and the recorder
    // badge follow the failed check; findings are sentences, not JSON.
    // The sample's evidence holds: the terminal's verdict.
    assert!(
        dom.contains("<span class=\"badge ok\">all checks hold</span>"),
        "verdict badge"
    );
    assert!(
        dom.contains("<span class=\"badge ok\">complete</span>"),
        "recorder badge"
    );
    // A bundle with a finding: the verdict and the recorder badge follow
    // the failed check; findings are sentences, not JSON.
    let failed = analyze_bundle(&dir, "testdata/compat/sample-bundle-v2-events", "r2");
    let (fdom, _, _) = render(&browser, &failed.join("report.html"), &dir);
    assert!(fdom.contains("FAILED: recorder"), "verdict badge");
    assert!(
        fdom.contains("complete \u{2014} check failed"),
        "recorder badge"
    );
    assert!(fdom.contains(
        "recorder-lost-events: the recorder lost evidence (events): 716 samples dropped"
    ));
    assert!(!fdom.contains("{&quot;what&quot;") && !fdom.contains("{\"what\""));
    // Not blank: far larger than the screenshot of an empty page.
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let (_, _, blank_png) = render(&browser, &blank, &dir);
    assert!(png.starts_with(b"\x89PNG"), "no screenshot produced");
    assert!(
        png.len() > 8 * blank_png.len().max(1000),
        "screenshot looks blank: {} bytes, an empty page gives {}",
        png.len(),
        blank_png.len()
    );
    if let Ok(keep) = std::env::var("PROCFLOW_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
