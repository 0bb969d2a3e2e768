//! What a buyer asks to render, and the one Blender command line that renders a set of its
//! frames the same way on every provider.

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::coordinator::Policy;
use crate::RenderError;

/// The most frames one job may have.
pub const MAX_FRAMES: u32 = 100_000;

/// Blender's highest frame number (`MAXFRAME`).
pub const MAX_FRAME: u32 = 1_048_574;

/// The Python that makes the tests' and the demo's scene: `blender -b --python-expr
/// DEMO_SCENE -- out.blend` writes a 24-frame animation of 64 × 48 pixels at 4 samples.
pub const DEMO_SCENE: &str = include_str!("demo_scene.py");

/// Where the scene is, under the job's inputs (`/job/in`).
pub const SCENE_PATH: &str = "scene.blend";

/// An inclusive range of frame numbers: never empty, never reversed, at most [`MAX_FRAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "(u32, u32)", into = "(u32, u32)")]
pub struct FrameRange {
    start: u32,
    end: u32,
}

impl FrameRange {
    pub fn new(start: u32, end: u32) -> Result<FrameRange, RenderError> {
        if end < start {
            return Err(RenderError::Frames(format!(
                "the range {start}..{end} is reversed"
            )));
        }
        if end > MAX_FRAME {
            return Err(RenderError::Frames(format!(
                "frame {end} is past Blender's last frame, {MAX_FRAME}"
            )));
        }
        if end - start >= MAX_FRAMES {
            return Err(RenderError::Frames(format!(
                "{} frames; a job has at most {MAX_FRAMES}",
                u64::from(end - start) + 1
            )));
        }
        Ok(FrameRange { start, end })
    }

    pub fn start(self) -> u32 {
        self.start
    }

    pub fn end(self) -> u32 {
        self.end
    }

    pub fn len(self) -> u32 {
        self.end - self.start + 1
    }

    /// Never: a range has at least one frame.
    pub fn is_empty(self) -> bool {
        false
    }

    pub fn iter(self) -> impl Iterator<Item = u32> {
        self.start..=self.end
    }
}

impl TryFrom<(u32, u32)> for FrameRange {
    type Error = RenderError;
    fn try_from((start, end): (u32, u32)) -> Result<Self, RenderError> {
        FrameRange::new(start, end)
    }
}

impl From<FrameRange> for (u32, u32) {
    fn from(r: FrameRange) -> (u32, u32) {
        (r.start, r.end)
    }
}

/// The render engine and the version of Blender it comes with. Only versions whose output
/// the market has checked to be repeatable are known: Cycles of Blender 3.4 (Debian 12's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineVersion {
    #[serde(rename = "cycles-3.4")]
    Cycles3_4,
}

impl EngineVersion {
    pub const ALL: [EngineVersion; 1] = [EngineVersion::Cycles3_4];

    /// `engine` (`cycles`, any case) at `version` (`3.4`, or a release of it such as `3.4.1`).
    pub fn parse(engine: &str, version: &str) -> Result<EngineVersion, RenderError> {
        let minor = version.split('.').take(2).collect::<Vec<_>>().join(".");
        let known = version.split('.').count() <= 3
            && version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        match (engine.to_ascii_lowercase().as_str(), minor.as_str()) {
            ("cycles", "3.4") if known => Ok(EngineVersion::Cycles3_4),
            _ => Err(RenderError::Engine(format!(
                "{engine} {version} is not a known render engine; known: {}",
                EngineVersion::ALL
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Blender's `(major, minor)`.
    pub fn blender(self) -> (u32, u32) {
        match self {
            EngineVersion::Cycles3_4 => (3, 4),
        }
    }
}

impl fmt::Display for EngineVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.blender();
        write!(f, "Cycles (Blender {major}.{minor})")
    }
}

/// The frames' file format: PNG, RGBA, 8 or 16 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutputFormat {
    Png,
    Png16,
}

impl OutputFormat {
    pub fn parse(text: &str) -> Result<OutputFormat, RenderError> {
        match text {
            "PNG" => Ok(OutputFormat::Png),
            "PNG16" => Ok(OutputFormat::Png16),
            other => Err(RenderError::Format(format!(
                "{other:?} is not an output format (PNG or PNG16)"
            ))),
        }
    }

    fn depth(self) -> &'static str {
        match self {
            OutputFormat::Png => "8",
            OutputFormat::Png16 => "16",
        }
    }
}

/// What to render: a scene (a `.blend` in the market's blob store), its frames, the format,
/// the engine, and optionally a sample count that replaces the scene's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderSpec {
    pub scene: contract::Digest,
    pub frames: FrameRange,
    pub format: OutputFormat,
    pub engine: EngineVersion,
    pub samples: Option<u32>,
    /// Cycles' noise seed: 0 for every render job, so two providers' renders of a frame
    /// compare; the market's checker picks one per check, so its answer cannot be rendered
    /// ahead of time.
    #[serde(default)]
    pub seed: u32,
}

impl RenderSpec {
    /// The most samples a job may set.
    pub const MAX_SAMPLES: u32 = 65_536;

    pub fn new(
        scene: contract::Digest,
        frames: FrameRange,
        format: OutputFormat,
        engine: EngineVersion,
        samples: Option<u32>,
    ) -> Result<RenderSpec, RenderError> {
        if samples.is_some_and(|s| s == 0 || s > Self::MAX_SAMPLES) {
            return Err(RenderError::Samples(Self::MAX_SAMPLES));
        }
        Ok(RenderSpec {
            scene,
            frames,
            format,
            engine,
            samples,
            seed: 0,
        })
    }

    /// The same, rendered with Cycles' noise seed `seed`.
    pub fn with_seed(self, seed: u32) -> RenderSpec {
        RenderSpec { seed, ..self }
    }

    /// The arguments of `blender` that render `frames` (sorted, distinct, within the job's
    /// range) of the scene at `/job/in/scene.blend` into `/job/out/frame_NNNNNNN.png`.
    ///
    /// Repeatable by construction: a fixed seed that does not change per frame, denoising
    /// off (its result depends on the CPU's vector units), one render thread, the film's
    /// burnt-in stamp off. The script first checks Blender's version and exits 3 on
    /// another, so a provider with the wrong Blender fails the frame rather than rendering
    /// different pixels. GPU providers render on their own device (OptiX, CUDA or HIP,
    /// whichever Cycles finds first), whose pixels are compared within the job's tolerance.
    pub fn blender_args(&self, frames: &[u32]) -> Vec<String> {
        let (major, minor) = self.engine.blender();
        let samples = self
            .samples
            .map(|s| format!("c.samples = {s}\n"))
            .unwrap_or_default();
        let script = format!(
            "import bpy, sys\n\
             if tuple(bpy.app.version[:2]) != ({major}, {minor}):\n    sys.exit(3)\n\
             s = bpy.context.scene\n\
             s.render.engine = 'CYCLES'\n\
             c = s.cycles\n\
             c.seed = {seed}\n\
             c.use_animated_seed = False\n\
             c.use_denoising = False\n\
             {samples}\
             c.device = 'CPU'\n\
             p = bpy.context.preferences.addons['cycles'].preferences\n\
             for kind in ('OPTIX', 'CUDA', 'HIP'):\n    \
                 try:\n        p.compute_device_type = kind\n    \
                 except TypeError:\n        continue\n    \
                 p.get_devices()\n    \
                 if any(d.type == kind for d in p.devices):\n        \
                     for d in p.devices:\n            d.use = d.type == kind\n        \
                     c.device = 'GPU'\n        break\n\
             s.render.threads_mode = 'FIXED'\n\
             s.render.threads = 1\n\
             s.render.use_stamp = False\n\
             f = s.render.image_settings\n\
             f.file_format = 'PNG'\n\
             f.color_mode = 'RGBA'\n\
             f.color_depth = '{depth}'\n",
            depth = self.format.depth(),
            seed = self.seed,
        );
        vec![
            "-b".into(),
            format!("/job/in/{SCENE_PATH}"),
            "--python-exit-code".into(),
            "4".into(),
            "--python-expr".into(),
            script,
            "-o".into(),
            "/job/out/frame_#######".into(),
            "-f".into(),
            frame_list(frames),
        ]
    }
}

/// How a job's GPUs are bought: leases of one GPU in `market`, each bid at most
/// `limit_price` per GPU-hour with the usual constraints, never more in all than `budget`;
/// the buyer's own `leases` (running, without a job) take the first tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub market: contract::MarketId,
    pub limit_price: contract::Price,
    pub budget: contract::Amount,
    /// The longest one frame may take on one GPU, in seconds: a task's time limit and the
    /// length of the leases bought.
    pub frame_seconds: u32,
    pub min_vram_gb: u32,
    pub regions: Vec<contract::Region>,
    pub min_reputation: contract::Reputation,
    pub leases: Vec<contract::LeaseId>,
}

impl Purchase {
    pub const MAX_FRAME_SECONDS: u32 = 86_400;
    pub const MAX_LEASES: usize = 256;

    /// Checks the purchase against the job: `BUDGET_TOO_LOW` where the budget does not cover
    /// every frame's time (the checked share rendered twice) at the limit price, or one lease.
    pub fn check(&self, frames: FrameRange, policy: &Policy) -> Result<(), RenderError> {
        if !(1..=Self::MAX_FRAME_SECONDS).contains(&self.frame_seconds) {
            return Err(RenderError::Purchase(format!(
                "frame seconds: 1 to {}",
                Self::MAX_FRAME_SECONDS
            )));
        }
        if self.leases.len() > Self::MAX_LEASES {
            return Err(RenderError::Purchase(format!(
                "at most {} leases",
                Self::MAX_LEASES
            )));
        }
        self.lease_hours(policy)?;
        let needed = self.needed(frames, policy);
        if needed > self.budget.micros() as i128 {
            return Err(RenderError::Budget {
                needed: contract::Amount::from_micros(needed.min(i128::from(i64::MAX)) as i64),
                budget: self.budget,
            });
        }
        Ok(())
    }

    /// The hours of each lease bought: a whole task's frames at their longest, at least one.
    pub fn lease_hours(&self, policy: &Policy) -> Result<contract::Hours, RenderError> {
        let seconds = u64::from(policy.frames_per_task) * u64::from(self.frame_seconds);
        contract::Hours::new(seconds.div_ceil(3_600).max(1))
            .map_err(|e| RenderError::Purchase(format!("a task's lease: {e}")))
    }

    /// The least a budget must be, in micro-units: every frame's time, the checked share
    /// twice, at the limit price (rounded up), and at least one lease's hold.
    fn needed(&self, frames: FrameRange, policy: &Policy) -> i128 {
        let price = i128::from(self.limit_price.micros());
        let gpu_ms = i128::from(frames.len())
            * (1_000_000 + i128::from(policy.check_ppm))
            * i128::from(self.frame_seconds)
            * 1_000
            / 1_000_000;
        let frames_cost = (gpu_ms * price + 3_599_999) / 3_600_000;
        let hours = self.lease_hours(policy).map_or(1, |h| i128::from(h.get()));
        frames_cost.max(price * hours)
    }
}

/// Frames in Blender's `-f` form: runs as `a..b`, joined by commas (`1..3,7`).
fn frame_list(frames: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let mut j = i;
        while j + 1 < frames.len() && frames[j + 1] == frames[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            frames[i].to_string()
        } else {
            format!("{}..{}", frames[i], frames[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The frame a job's output file holds: `frame_NNNNNNN.png` (seven digits), else `None`.
pub fn frame_of(path: &str) -> Option<u32> {
    let digits = path.strip_prefix("frame_")?.strip_suffix(".png")?;
    (digits.len() == 7 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The Blender version that wrote a `.blend` file, from its first bytes (`BLENDER`, pointer
/// size `_` or `-`, endianness `v` or `V`, three digits), looking inside gzip and zstd
/// compression; anything else is not a scene.
pub fn blend_version(prefix: &[u8]) -> Result<(u32, u32), RenderError> {
    let mut header = [0u8; 12];
    let read = match prefix {
        [0x1f, 0x8b, ..] => read_prefix(flate2::read::GzDecoder::new(prefix), &mut header),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => match zstd::stream::read::Decoder::new(prefix) {
            Ok(decoder) => read_prefix(decoder, &mut header),
            Err(_) => 0,
        },
        _ => read_prefix(prefix, &mut header),
    };
    let not_blend = || RenderError::Scene("the scene is not a .blend file".into());
    if read < 12 || &header[..7] != b"BLENDER" {
        return Err(not_blend());
    }
    if !matches!(header[7], b'_' | b'-') || !matches!(header[8], b'v' | b'V') {
        return Err(not_blend());
    }
    let digits = &header[9..12];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(not_blend());
    }
    let number = |d: &[u8]| d.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    Ok((number(&digits[..1]), number(&digits[1..])))
}

/// Reads as much of `buf` as `reader` gives, stopping at an error (a truncated stream).
fn read_prefix(mut reader: impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists_are_runs() {
        assert_eq!(frame_list(&[1, 2, 3, 7, 9, 10]), "1..3,7,9..10");
        assert_eq!(frame_list(&[5]), "5");
    }

    #[test]
    fn output_names_are_frames() {
        assert_eq!(frame_of("frame_0000024.png"), Some(24));
        assert_eq!(frame_of("frame_24.png"), None);
        assert_eq!(frame_of("x/frame_0000024.png"), None);
        assert_eq!(frame_of("frame_00000a4.png"), None);
    }
}
