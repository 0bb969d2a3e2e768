//! Frames compared by what they show: a PNG decoded to 16-bit RGBA, its digest over the
//! pixels only. Blender writes the date, the render time and the host into PNG text chunks,
//! so two renders of the same pixels differ byte for byte; here they are equal.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::RenderError;

/// The widest and tallest frame compared (8K is 7,680 × 4,320).
pub const MAX_SIDE: u32 = 16_384;

/// The most decoded bytes one frame may need: a decompression bomb stops here.
const MAX_DECODED: usize = 1 << 30;

/// A frame's pixels: `width × height` RGBA samples at 16 bits (8-bit sources scaled by 257,
/// palettes and grey expanded, a missing alpha opaque).
#[derive(Clone, PartialEq, Eq)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    rgba: Vec<u16>,
}

impl fmt::Debug for Pixels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Pixels({}×{}, {})",
            self.width,
            self.height,
            self.digest()
        )
    }
}

/// The SHA-256 of a frame's dimensions and pixels ([`Pixels::digest`]), written `px1-<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PixelDigest([u8; 32]);

impl PixelDigest {
    pub fn parse(text: &str) -> Result<PixelDigest, RenderError> {
        let bad = || RenderError::Image(format!("{text:?} is not a pixel digest (px1-<hex>)"));
        let hex = text.strip_prefix("px1-").ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).map_err(|_| bad())?;
        Ok(PixelDigest(bytes))
    }
}

impl fmt::Display for PixelDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "px1-{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PixelDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TryFrom<String> for PixelDigest {
    type Error = RenderError;
    fn try_from(s: String) -> Result<Self, RenderError> {
        PixelDigest::parse(&s)
    }
}

impl From<PixelDigest> for String {
    fn from(d: PixelDigest) -> String {
        d.to_string()
    }
}

impl Pixels {
    /// Decodes a PNG (metadata ignored). Not a PNG, damaged, animated, or larger than
    /// [`MAX_SIDE`] on a side: [`RenderError::Image`].
    pub fn decode_png(bytes: &[u8]) -> Result<Pixels, RenderError> {
        let bad = |e: &dyn fmt::Display| RenderError::Image(format!("not a frame: {e}"));
        let mut decoder = png::Decoder::new_with_limits(bytes, png::Limits { bytes: MAX_DECODED });
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().map_err(|e| bad(&e))?;
        let info = reader.info();
        let (width, height) = (info.width, info.height);
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(RenderError::Image(format!(
                "a {width}×{height} frame: at most {MAX_SIDE} on a side"
            )));
        }
        if info.animation_control.is_some() {
            return Err(RenderError::Image("an animated PNG is not a frame".into()));
        }
        let mut buf = vec![0; reader.output_buffer_size()];
        let out = reader.next_frame(&mut buf).map_err(|e| bad(&e))?;
        let buf = &buf[..out.buffer_size()];
        let wide = out.bit_depth == png::BitDepth::Sixteen;
        let sample = |i: usize| -> u16 {
            if wide {
                u16::from_be_bytes([buf[2 * i], buf[2 * i + 1]])
            } else {
                u16::from(buf[i]) * 257
            }
        };
        let channels = match out.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => {
                return Err(RenderError::Image("a palette left unexpanded".into()))
            }
        };
        let count = width as usize * height as usize;
        let mut rgba = Vec::with_capacity(count * 4);
        for p in 0..count {
            let at = p * channels;
            let px = match channels {
                1 => [sample(at), sample(at), sample(at), u16::MAX],
                2 => [sample(at), sample(at), sample(at), sample(at + 1)],
                3 => [sample(at), sample(at + 1), sample(at + 2), u16::MAX],
                _ => [sample(at), sample(at + 1), sample(at + 2), sample(at + 3)],
            };
            rgba.extend_from_slice(&px);
        }
        Ok(Pixels {
            width,
            height,
            rgba,
        })
    }

    /// The digest of the dimensions and samples (big-endian), so equal pictures have equal
    /// digests whatever their encoding, and any pixel's change changes it.
    pub fn digest(&self) -> PixelDigest {
        let mut h = Sha256::new();
        h.update(b"gpumarket pixels v1\0");
        h.update(self.width.to_be_bytes());
        h.update(self.height.to_be_bytes());
        for s in &self.rgba {
            h.update(s.to_be_bytes());
        }
        PixelDigest(h.finalize().into())
    }

    /// Whether `other` shows the same picture: the same size, and no sample further from
    /// this one's than `tolerance` steps of 8 bits (0: identical pixels).
    pub fn matches(&self, other: &Pixels, tolerance: u8) -> bool {
        if (self.width, self.height) != (other.width, other.height) {
            return false;
        }
        let limit = u32::from(tolerance) * 257;
        self.rgba
            .iter()
            .zip(&other.rgba)
            .all(|(a, b)| u32::from(a.abs_diff(*b)) <= limit)
    }

    /// The same picture with one pixel's red changed by `by` (wrapping): a wrong frame.
    pub fn tampered(&self, by: u16) -> Pixels {
        let mut wrong = self.clone();
        if let Some(r) = wrong.rgba.first_mut() {
            *r = r.wrapping_add(by);
        }
        wrong
    }

    /// Encodes as a 16-bit RGBA PNG.
    pub fn encode_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Sixteen);
        let bytes: Vec<u8> = self.rgba.iter().flat_map(|s| s.to_be_bytes()).collect();
        let mut writer = encoder.write_header().expect("writing to memory");
        writer.write_image_data(&bytes).expect("the size matches");
        writer.finish().expect("writing to memory");
        out
    }
}
