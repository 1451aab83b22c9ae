//! `kiln flash`: write a node disk image to a disk or USB stick, read it back and compare.
//!
//! The checks, the copy and the comparison are `crate::flash`'s; this file times the copy,
//! draws the progress and maps refusals to exit 2 and a bad read-back to exit 1.

use std::path::PathBuf;
use std::time::Instant;

use crate::commands::{print_out, CommandError};
use crate::flash::{
    choose_target, describe_size, open_target, read_back, write_image, FlashError, Image,
    SystemView,
};
use crate::report::BytesProgress;

/// `kiln flash` settings.
#[derive(Debug)]
pub struct FlashSettings {
    /// The raw disk image.
    pub image: PathBuf,
    /// The disk, or a file.
    pub device: PathBuf,
    /// Allow a fixed disk.
    pub force: bool,
    /// JSON on stdout.
    pub json: bool,
    /// Where the machine's block devices and mounts are read from.
    pub view: SystemView,
}

/// Run `kiln flash`.
pub fn run(settings: &FlashSettings) -> Result<(), CommandError> {
    let mut image = Image::open(&settings.image).map_err(command_error)?;
    let target = choose_target(&image, &settings.device, &settings.view, settings.force)
        .map_err(command_error)?;
    let mut device = open_target(&target, image.len).map_err(command_error)?;
    eprintln!(
        "flash: writing {} ({}) to {}",
        image.path.display(),
        describe_size(image.len),
        target.describe()
    );
    let started = Instant::now();
    let digest = {
        let progress = BytesProgress::new("writing", image.len);
        write_image(&mut image, &mut device, &mut |bytes| progress.set(bytes))
            .map_err(command_error)?
    };
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "flash: wrote {} bytes in {seconds:.1} s ({:.1} MB/s)",
        image.len,
        image.len as f64 / seconds.max(f64::EPSILON) / 1e6
    );
    let verified = {
        let progress = BytesProgress::new("verifying", image.len);
        read_back(
            target.path(),
            &mut device,
            image.len,
            &digest,
            &mut |bytes| progress.set(bytes),
        )
    };
    let device_digest = match &verified {
        Ok(digest) | Err(FlashError::Mismatch { device: digest, .. }) => digest,
        Err(_) => return verified.map(|_| ()).map_err(command_error),
    };
    if settings.json {
        let mut result = serde_json::json!({
            "image": image.path,
            "device": target.path(),
            "bytes": image.len,
            "seconds": seconds,
            "sha256": digest.hex(),
            "verified": verified.is_ok(),
        });
        if verified.is_err() {
            result["device_sha256"] = device_digest.hex().into();
        }
        let text = serde_json::to_string_pretty(&result).expect("JSON serializes");
        print_out(&format!("{text}\n"))?;
    }
    verified.map_err(command_error)?;
    eprintln!("verified: sha256 {}", digest.hex());
    Ok(())
}

/// Refusals (nothing was written) are usage errors, exit 2; a device that does not read
/// back as the image is a failed check, exit 1; anything else is exit 2.
fn command_error(error: FlashError) -> CommandError {
    match error {
        FlashError::Mismatch { .. } | FlashError::ShortRead { .. } => {
            CommandError::Failed(error.to_string())
        }
        error if error.is_refusal() => CommandError::Usage(error.to_string()),
        error => CommandError::Internal(error.to_string()),
    }
}
