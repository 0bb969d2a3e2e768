//! Blender on this machine, outside any sandbox: the demo's scene made from its script, and
//! a reference render of frames with exactly the command line a provider runs (`/job/` mapped
//! to a folder here), which is what the tests and the render benchmark compare a market's
//! frames with. The only I/O in this crate.

use std::path::Path;
use std::process::Command;

use crate::pixels::{PixelDigest, Pixels};
use crate::spec::{RenderSpec, DEMO_SCENE, SCENE_PATH};
use crate::RenderError;

/// Whether `blender` runs here.
pub fn installed() -> bool {
    Command::new("blender")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(args: &[String]) -> Result<(), RenderError> {
    let out = Command::new("blender")
        .args(args)
        .output()
        .map_err(|e| RenderError::Blender(format!("blender does not run here: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let tail: String = text.lines().rev().take(8).collect::<Vec<_>>().join(" / ");
        return Err(RenderError::Blender(format!("{}: {tail}", out.status)));
    }
    Ok(())
}

/// Makes the demo's animation (`DEMO_SCENE`) at `path`, whole or not at all.
pub fn make_demo_scene(path: &Path) -> Result<(), RenderError> {
    let partial = path.with_extension("blend.partial");
    run(&[
        "-b".into(),
        "--python-expr".into(),
        DEMO_SCENE.into(),
        "--".into(),
        partial.display().to_string(),
    ])?;
    std::fs::rename(&partial, path).map_err(|e| RenderError::Blender(e.to_string()))
}

/// Renders `frames` of `spec` from `scene` in `dir` (its `in/` and `out/` are made) with the
/// providers' command line, and returns each frame's pixel digest, in frame order.
pub fn render_frames(
    spec: &RenderSpec,
    scene: &[u8],
    frames: &[u32],
    dir: &Path,
) -> Result<Vec<PixelDigest>, RenderError> {
    let io = |e: std::io::Error| RenderError::Blender(e.to_string());
    std::fs::create_dir_all(dir.join("in")).map_err(io)?;
    std::fs::create_dir_all(dir.join("out")).map_err(io)?;
    std::fs::write(dir.join("in").join(SCENE_PATH), scene).map_err(io)?;
    let root = format!("{}/", dir.display());
    let args: Vec<String> = spec
        .blender_args(frames)
        .into_iter()
        .map(|a| a.replace("/job/", &root))
        .collect();
    run(&args)?;
    frames
        .iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(format!("out/frame_{n:07}.png"))).map_err(io)?;
            Ok(Pixels::decode_png(&bytes)?.digest())
        })
        .collect()
}
