use render::spec::{blend_version, frame_of};
use render::{EngineVersion, FrameRange, OutputFormat, RenderError, RenderSpec};

#[test]
fn frame_ranges_are_checked() {
    assert_eq!(FrameRange::new(1, 24).unwrap().len(), 24);
    assert_eq!(FrameRange::new(7, 7).unwrap().len(), 1);
    assert!(matches!(FrameRange::new(5, 4), Err(RenderError::Frames(_))));
    assert!(FrameRange::new(0, 99_999).is_ok());
    assert!(matches!(
        FrameRange::new(0, 100_000),
        Err(RenderError::Frames(_))
    ));
    assert!(matches!(
        FrameRange::new(1_048_570, 1_048_575),
        Err(RenderError::Frames(_))
    ));
    // The stored form is checked on the way back in too.
    assert!(serde_json::from_str::<FrameRange>("[9, 3]").is_err());
    assert_eq!(
        serde_json::from_str::<FrameRange>("[3, 9]").unwrap(),
        FrameRange::new(3, 9).unwrap()
    );
}

#[test]
fn only_known_engines_are_taken() {
    assert_eq!(
        EngineVersion::parse("cycles", "3.4"),
        Ok(EngineVersion::Cycles3_4)
    );
    assert_eq!(
        EngineVersion::parse("Cycles", "3.4.1"),
        Ok(EngineVersion::Cycles3_4)
    );
    for (engine, version) in [
        ("cycles", "3.5"),
        ("cycles", "4.2"),
        ("eevee", "3.4"),
        ("cycles", "3.4.x"),
        ("cycles", "3.4.1.2"),
        ("cycles", ""),
    ] {
        assert!(
            matches!(
                EngineVersion::parse(engine, version),
                Err(RenderError::Engine(_))
            ),
            "{engine} {version}"
        );
    }
    assert!(OutputFormat::parse("JPEG").is_err());
    assert_eq!(OutputFormat::parse("PNG16"), Ok(OutputFormat::Png16));
}

#[test]
fn scenes_are_blend_files_by_their_header_even_compressed() {
    let header = b"BLENDER-v304REND\0\0\0\0";
    assert_eq!(blend_version(header), Ok((3, 4)));
    let mut gz = flate2_gzip(header);
    assert_eq!(blend_version(&gz), Ok((3, 4)));
    gz.truncate(4);
    assert!(blend_version(&gz).is_err());
    for bad in [
        &b""[..],
        b"BLENDER",
        b"PK\x03\x04 not a scene",
        b"BLENDER-x304",
        b"BLENDER-vABC",
        b"\x28\xb5\x2f\xfd garbage",
    ] {
        assert!(
            matches!(blend_version(bad), Err(RenderError::Scene(_))),
            "{bad:?}"
        );
    }
}

fn flate2_gzip(bytes: &[u8]) -> Vec<u8> {
    // A gzip member written by hand (stored deflate block), so the test needs no encoder.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(1);
    let len = bytes.len() as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(&[0; 8]);
    out
}

#[test]
fn the_blender_command_renders_exactly_the_frames_asked() {
    let spec = RenderSpec::new(
        contract::Digest::of(b"scene"),
        FrameRange::new(1, 24).unwrap(),
        OutputFormat::Png,
        EngineVersion::Cycles3_4,
        Some(4),
    )
    .unwrap();
    let args = spec.blender_args(&[1, 2, 3, 10, 12, 13]);
    assert_eq!(args[0], "-b");
    assert_eq!(args[1], "/job/in/scene.blend");
    assert_eq!(args.last().unwrap(), "1..3,10,12..13");
    let script = &args[args.iter().position(|a| a == "--python-expr").unwrap() + 1];
    for line in [
        "c.seed = 0",
        "c.use_denoising = False",
        "c.samples = 4",
        "s.render.threads = 1",
        "sys.exit(3)",
    ] {
        assert!(script.contains(line), "{line}");
    }
    assert!(matches!(
        RenderSpec::new(
            contract::Digest::of(b"scene"),
            FrameRange::new(1, 2).unwrap(),
            OutputFormat::Png,
            EngineVersion::Cycles3_4,
            Some(0),
        ),
        Err(RenderError::Samples(_))
    ));
    assert_eq!(frame_of("frame_0000013.png"), Some(13));
}
