use render::{PixelDigest, Pixels, RenderError};

fn png(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    text: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, width, height);
    e.set_color(color);
    e.set_depth(depth);
    e.add_text_chunk("Date".into(), text.into()).unwrap();
    let mut w = e.write_header().unwrap();
    w.write_image_data(data).unwrap();
    w.finish().unwrap();
    out
}

#[test]
fn the_same_pixels_have_one_digest_whatever_the_metadata_and_encoding() {
    let rgb8 = [10u8, 20, 30, 40, 50, 60];
    let a = png(
        2,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &rgb8,
        "2026-12-02 07:00",
    );
    let b = png(
        2,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &rgb8,
        "2026-12-02 08:00 RenderTime 00:01.20",
    );
    assert_ne!(a, b);
    let rgba16: Vec<u8> = [10u8, 20, 30, 255, 40, 50, 60, 255]
        .iter()
        .flat_map(|v| (u16::from(*v) * 257).to_be_bytes())
        .collect();
    let c = png(
        2,
        1,
        png::ColorType::Rgba,
        png::BitDepth::Sixteen,
        &rgba16,
        "",
    );
    let pa = Pixels::decode_png(&a).unwrap();
    assert_eq!(pa.digest(), Pixels::decode_png(&b).unwrap().digest());
    assert_eq!(pa.digest(), Pixels::decode_png(&c).unwrap().digest());
    // Through our own encoder and back.
    assert_eq!(Pixels::decode_png(&pa.encode_png()).unwrap(), pa);
    // The digest's text form round-trips and nothing else parses.
    let d = pa.digest();
    assert_eq!(PixelDigest::parse(&d.to_string()), Ok(d));
    assert!(PixelDigest::parse("px1-00").is_err());
    assert!(PixelDigest::parse(&d.to_string().replace("px1-", "px2-")).is_err());
}

#[test]
fn one_changed_sample_is_another_picture_unless_within_the_tolerance() {
    let rgb8 = [10u8, 20, 30, 40, 50, 60];
    let mut other = rgb8;
    other[4] += 2;
    let a = Pixels::decode_png(&png(
        2,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &rgb8,
        "",
    ))
    .unwrap();
    let b = Pixels::decode_png(&png(
        2,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &other,
        "",
    ))
    .unwrap();
    assert_ne!(a.digest(), b.digest());
    assert!(!a.matches(&b, 0));
    assert!(!a.matches(&b, 1));
    assert!(a.matches(&b, 2));
    assert!(a.matches(&a, 0));
    assert_ne!(a.tampered(1).digest(), a.digest());
    // Another size is never the same picture.
    let wide = Pixels::decode_png(&png(
        3,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &[0; 9],
        "",
    ))
    .unwrap();
    assert!(!a.matches(&wide, 255));
}

#[test]
fn what_is_not_a_frame_is_a_typed_error() {
    for bad in [&b""[..], b"\x89PNG\r\n\x1a\n", b"GIF89a....", &[0u8; 64]] {
        assert!(matches!(
            Pixels::decode_png(bad),
            Err(RenderError::Image(_))
        ));
    }
    // A header that claims a picture larger than any frame is refused before decoding.
    let mut big = png(1, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[0; 3], "");
    // IHDR's width is at bytes 16..20; its CRC no longer matches either, which is refused too.
    big[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(matches!(
        Pixels::decode_png(&big),
        Err(RenderError::Image(_))
    ));
    // A truncated file.
    let good = png(2, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[1; 6], "");
    assert!(Pixels::decode_png(&good[..good.len() - 20]).is_err());
}
