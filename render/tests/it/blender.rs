//! Blender renders the same pixels twice with the market's command line, though its files
//! differ (their text chunks carry the render's time), and another sample count renders other
//! pixels: the comparison the verification relies on, on the real engine.

use std::path::Path;
use std::process::Command;

use render::{EngineVersion, FrameRange, OutputFormat, Pixels, RenderSpec};

fn blender() -> &'static str {
    assert!(
        Command::new("blender")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the render tests need Blender: `apt-get install --no-install-recommends blender` \
         (scripts/test installs it)"
    );
    "blender"
}

/// Runs the market's arguments with `/job` mapped to `job`.
fn render(job: &Path, spec: &RenderSpec, frames: &[u32]) {
    let root = job.to_str().unwrap();
    let args: Vec<String> = spec
        .blender_args(frames)
        .into_iter()
        .map(|a| a.replace("/job/", &format!("{root}/")))
        .collect();
    let out = Command::new(blender()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "blender failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn blender_renders_the_same_pixels_twice_and_other_samples_differ() {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene.blend");
    blender();
    render::local::make_demo_scene(&scene).unwrap();
    let bytes = std::fs::read(&scene).unwrap();
    assert_eq!(render::spec::blend_version(&bytes), Ok((3, 4)));
    let spec = |samples| {
        RenderSpec::new(
            contract::Digest::of(&bytes),
            FrameRange::new(1, 24).unwrap(),
            OutputFormat::Png,
            EngineVersion::Cycles3_4,
            samples,
        )
        .unwrap()
    };
    let mut frames = Vec::new();
    for (run, samples) in [("a", None), ("b", None), ("c", Some(2))] {
        let job = dir.path().join(run);
        std::fs::create_dir_all(job.join("in")).unwrap();
        std::fs::create_dir_all(job.join("out")).unwrap();
        std::fs::copy(&scene, job.join("in/scene.blend")).unwrap();
        render(&job, &spec(samples), &[3, 12]);
        let names: Vec<String> = std::fs::read_dir(job.join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, ["frame_0000003.png", "frame_0000012.png"]);
        frames.push(std::fs::read(job.join("out/frame_0000012.png")).unwrap());
    }
    let [a, b, c] = &frames[..] else {
        unreachable!()
    };
    let (pa, pb, pc) = (
        Pixels::decode_png(a).unwrap(),
        Pixels::decode_png(b).unwrap(),
        Pixels::decode_png(c).unwrap(),
    );
    assert_eq!((pa.width, pa.height), (64, 48));
    assert_eq!(pa.digest(), pb.digest(), "two renders, the same pixels");
    assert_ne!(pa.digest(), pc.digest(), "fewer samples, other pixels");
}
