//! Unified kernel images (UKIs), assembled in pure Rust so that the same inputs give the
//! same bytes.
//!
//! A UKI is systemd's EFI stub (`linuxx64.efi.stub`) with the kernel, its initrd, its
//! command line and the os-release text added as PE sections; firmware boots it like any
//! EFI application and the stub, which finds the sections by name, hands them to the
//! kernel. Debian bookworm ships the stub (systemd 252) but not `ukify`, and `objcopy`
//! stamps the build time into the COFF header, so kiln adds the sections itself.
//!
//! The layout follows `pe_add_sections` in systemd's `ukify.py`
//! (See: https://github.com/systemd/systemd/blob/main/src/ukify/ukify.py):
//! - the new section headers go into the zero padding between the section table and the
//!   first section's data, after rounding `SizeOfHeaders` up to `FileAlignment`;
//! - each section's data starts at the end of the file rounded up to `FileAlignment` and is
//!   zero-padded to a multiple of it, `VirtualSize` is the exact length, and addresses follow
//!   the image's end at `SectionAlignment`;
//! - `.linux` comes last, "to leave breathing room for decompression": a kernel started
//!   through the EFI handover protocol may decompress in place, over whatever follows it
//!   (the kernel's own comment in `arch/x86/boot/compressed` names the UKI's initrd);
//! - `.linux` is marked as code, the rest as initialized data, all read-only;
//! - a COFF symbol table left at the end of the file is dropped (images should not have
//!   one; ukify strips it from old stubs, and Debian's 252 stub is one of them).
//!
//! On top of ukify, the COFF `TimeDateStamp` is set from the caller and the optional
//! header's `CheckSum` is computed (ukify leaves it 0), so the result is fully determined
//! by its inputs. This module owns the PE/COFF format for kiln; deciding what goes into a
//! UKI (which kernel, which command line) belongs to the image step that calls it.

use std::ops::Range;

/// `IMAGE_FILE_MACHINE_AMD64`: the only architecture kiln builds UKIs for.
const MACHINE_X86_64: u16 = 0x8664;
/// The optional header magic of PE32+, the 64-bit format.
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// `IMAGE_FILE_LOCAL_SYMS_STRIPPED`, set once the COFF symbol table is dropped.
const LOCAL_SYMBOLS_STRIPPED: u16 = 0x0008;
/// `IMAGE_SCN_CNT_CODE`.
const CONTAINS_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
const CONTAINS_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_READ`.
const READABLE: u32 = 0x4000_0000;

/// Size of the DOS header that holds `e_lfanew`, the offset of the PE signature.
const DOS_HEADER_SIZE: usize = 0x40;
/// Offset of `e_lfanew` in the DOS header.
const DOS_PE_OFFSET: usize = 0x3c;
/// Size of the COFF file header that follows the `PE\0\0` signature.
const COFF_HEADER_SIZE: usize = 20;
/// Size of one section table entry.
const SECTION_HEADER_SIZE: usize = 40;
/// Size of one COFF symbol table entry.
const SYMBOL_SIZE: usize = 18;
/// Index of the certificate table (Authenticode signature) among the data directories.
const SECURITY_DIRECTORY: u32 = 4;

// Offsets of the fields kiln reads or writes, from the start of the COFF header.
const COFF_MACHINE: usize = 0;
const COFF_NUMBER_OF_SECTIONS: usize = 2;
const COFF_TIME_DATE_STAMP: usize = 4;
const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
const COFF_NUMBER_OF_SYMBOLS: usize = 12;
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
const COFF_CHARACTERISTICS: usize = 18;

// Offsets of the fields kiln reads or writes, from the start of the PE32+ optional header.
const OPTIONAL_MAGIC: usize = 0;
const OPTIONAL_SIZE_OF_CODE: usize = 4;
const OPTIONAL_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPTIONAL_SECTION_ALIGNMENT: usize = 32;
const OPTIONAL_FILE_ALIGNMENT: usize = 36;
const OPTIONAL_SIZE_OF_IMAGE: usize = 56;
const OPTIONAL_SIZE_OF_HEADERS: usize = 60;
const OPTIONAL_CHECKSUM: usize = 64;
const OPTIONAL_NUMBER_OF_RVA_AND_SIZES: usize = 108;
const OPTIONAL_DATA_DIRECTORIES: usize = 112;

// Offsets in a section table entry.
const SECTION_VIRTUAL_SIZE: usize = 8;
const SECTION_VIRTUAL_ADDRESS: usize = 12;
const SECTION_SIZE_OF_RAW_DATA: usize = 16;
const SECTION_POINTER_TO_RAW_DATA: usize = 20;
const SECTION_CHARACTERISTICS: usize = 36;

/// The parts of a unified kernel image.
///
/// Each part is stored verbatim. An empty `osrel`, `cmdline` or `initrd` is left out of
/// the image, as ukify does; `linux` must be an x86 bzImage.
#[derive(Clone, Copy, Debug)]
pub struct UkiParts<'a> {
    /// The os-release text (`/etc/os-release`), shown by boot menus.
    pub osrel: &'a [u8],
    /// The kernel command line. The stub passes exactly these bytes (up to a NUL, if any)
    /// to the kernel, so like ukify give it without a trailing newline or NUL.
    pub cmdline: &'a [u8],
    /// The kernel, an x86 bzImage (`/boot/vmlinuz-*`).
    pub linux: &'a [u8],
    /// The initramfs; concatenated cpio archives are fine.
    pub initrd: &'a [u8],
}

/// Why a UKI could not be built or a PE image not read.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    /// The input is not a well-formed PE image.
    #[error("not a PE image: {problem}")]
    Malformed {
        /// What is wrong, with the offset where it applies.
        problem: String,
    },
    /// The input is a PE image for another architecture.
    #[error("the PE image is for machine {machine:#06x}, not x86-64 ({MACHINE_X86_64:#06x})")]
    NotX86_64 {
        /// The COFF header's machine field.
        machine: u16,
    },
    /// The input is a 32-bit PE image (or has an unknown optional header).
    #[error(
        "the PE image has optional header magic {magic:#05x}, not PE32+ ({PE32_PLUS_MAGIC:#05x})"
    )]
    NotPe32Plus {
        /// The optional header's magic field.
        magic: u16,
    },
    /// The stub carries an Authenticode signature, which added sections would break.
    #[error(
        "the stub is signed; adding sections would invalidate its signature \
         (use an unsigned stub and sign the UKI instead)"
    )]
    SignedStub,
    /// The stub already has a section that the UKI adds.
    #[error("the stub already has a `{name}` section")]
    SectionExists {
        /// The section name.
        name: &'static str,
    },
    /// The section table cannot grow: the first section's data or address follows it.
    #[error(
        "no room for {added} more section headers in the stub: the section table would end \
         at {needed:#x}, but the headers must end by {limit:#x}"
    )]
    NoHeaderRoom {
        /// How many section headers were to be added.
        added: usize,
        /// Where the grown section table would end.
        needed: usize,
        /// Where the header area must end (first section's data or address).
        limit: usize,
    },
    /// The bytes after the section table, where new headers would go, are not padding.
    #[error("the stub has non-zero bytes at {offset:#x}, where new section headers would go")]
    HeaderSpaceInUse {
        /// Offset of the first non-zero byte.
        offset: usize,
    },
    /// The `.linux` part is not a bzImage.
    #[error(
        "the kernel is not an x86 bzImage (no `MZ` at offset 0 and `HdrS` at 0x202); \
         were the kernel and initrd swapped?"
    )]
    NotBzImage,
    /// A PE image's offsets and sizes are 32-bit, so the UKI must stay under 4 GiB.
    #[error("the UKI would exceed the 4 GiB limit of PE images while adding `{name}`")]
    TooLarge {
        /// The section being added.
        name: &'static str,
    },
}

/// A section table entry, as far as kiln needs it.
struct SectionHeader {
    name: [u8; 8],
    virtual_size: u32,
    virtual_address: u32,
    size_of_raw_data: u32,
    pointer_to_raw_data: u32,
}

impl SectionHeader {
    fn name(&self) -> String {
        let end = self.name.iter().position(|&byte| byte == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// The section's data in the file; empty for sections with no data (such as `.bss`).
    fn file_range(&self) -> Range<usize> {
        let start = self.pointer_to_raw_data as usize;
        start..start + self.size_of_raw_data as usize
    }
}

/// The validated headers of a PE32+ x86-64 image.
struct Headers {
    /// Offset of the COFF header (just after `PE\0\0`).
    coff: usize,
    /// Offset of the optional header.
    optional: usize,
    /// Offset of the section table.
    section_table: usize,
    sections: Vec<SectionHeader>,
    file_alignment: u32,
    section_alignment: u32,
    size_of_headers: u32,
    size_of_image: u32,
    signed: bool,
}

fn malformed(problem: impl Into<String>) -> UkiError {
    UkiError::Malformed {
        problem: problem.into(),
    }
}

fn read_u16(bytes: &[u8], offset: usize, field: &str) -> Result<u16, UkiError> {
    bytes
        .get(offset..offset + 2)
        .map(|bytes| u16::from_le_bytes([bytes[0], bytes[1]]))
        .ok_or_else(|| {
            malformed(format!(
                "{field} at {offset:#x} is past the end of the file"
            ))
        })
}

fn read_u32(bytes: &[u8], offset: usize, field: &str) -> Result<u32, UkiError> {
    bytes
        .get(offset..offset + 4)
        .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .ok_or_else(|| {
            malformed(format!(
                "{field} at {offset:#x} is past the end of the file"
            ))
        })
}

/// Writes a field whose offset `parse` has already checked.
fn write_u16(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

/// Writes a field whose offset `parse` has already checked.
fn write_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn align_up(value: u64, alignment: u32) -> u64 {
    value.div_ceil(u64::from(alignment)) * u64::from(alignment)
}

fn parse(pe: &[u8]) -> Result<Headers, UkiError> {
    if pe.len() < DOS_HEADER_SIZE || !pe.starts_with(b"MZ") {
        return Err(malformed("no DOS header (`MZ`) at the start"));
    }
    let signature = read_u32(pe, DOS_PE_OFFSET, "e_lfanew")? as usize;
    if pe.get(signature..signature + 4) != Some(b"PE\0\0".as_slice()) {
        return Err(malformed(format!(
            "no PE signature at {signature:#x}, where e_lfanew points"
        )));
    }
    let coff = signature + 4;
    if pe.len() < coff + COFF_HEADER_SIZE {
        return Err(malformed("the COFF header is cut off"));
    }
    let machine = read_u16(pe, coff + COFF_MACHINE, "Machine")?;
    if machine != MACHINE_X86_64 {
        return Err(UkiError::NotX86_64 { machine });
    }
    let section_count = usize::from(read_u16(
        pe,
        coff + COFF_NUMBER_OF_SECTIONS,
        "NumberOfSections",
    )?);
    let optional_size = usize::from(read_u16(
        pe,
        coff + COFF_SIZE_OF_OPTIONAL_HEADER,
        "SizeOfOptionalHeader",
    )?);
    let optional = coff + COFF_HEADER_SIZE;
    let magic = read_u16(pe, optional + OPTIONAL_MAGIC, "the optional header magic")?;
    if magic != PE32_PLUS_MAGIC {
        return Err(UkiError::NotPe32Plus { magic });
    }
    if optional_size < OPTIONAL_DATA_DIRECTORIES || pe.len() < optional + optional_size {
        return Err(malformed(format!(
            "the optional header ({optional_size} bytes at {optional:#x}) is cut off"
        )));
    }
    let file_alignment = read_u32(pe, optional + OPTIONAL_FILE_ALIGNMENT, "FileAlignment")?;
    let section_alignment = read_u32(
        pe,
        optional + OPTIONAL_SECTION_ALIGNMENT,
        "SectionAlignment",
    )?;
    // The PE format requires both to be powers of two, FileAlignment at least 512.
    if !file_alignment.is_power_of_two()
        || file_alignment < 512
        || !section_alignment.is_power_of_two()
        || section_alignment < file_alignment
    {
        return Err(malformed(format!(
            "FileAlignment {file_alignment:#x} and SectionAlignment {section_alignment:#x} \
             are not powers of two with 512 <= FileAlignment <= SectionAlignment"
        )));
    }
    let size_of_image = read_u32(pe, optional + OPTIONAL_SIZE_OF_IMAGE, "SizeOfImage")?;
    let size_of_headers = read_u32(pe, optional + OPTIONAL_SIZE_OF_HEADERS, "SizeOfHeaders")?;
    let directory_count = read_u32(
        pe,
        optional + OPTIONAL_NUMBER_OF_RVA_AND_SIZES,
        "NumberOfRvaAndSizes",
    )?;
    let security = optional + OPTIONAL_DATA_DIRECTORIES + 8 * SECURITY_DIRECTORY as usize;
    let signed = directory_count > SECURITY_DIRECTORY
        && security + 8 <= optional + optional_size
        && read_u32(pe, security, "the certificate table address")? != 0;

    let section_table = optional + optional_size;
    let table_end = section_table + section_count * SECTION_HEADER_SIZE;
    if pe.len() < table_end {
        return Err(malformed(format!(
            "the section table ({section_count} entries at {section_table:#x}) is cut off"
        )));
    }
    let sections = pe[section_table..table_end]
        .chunks_exact(SECTION_HEADER_SIZE)
        .map(|entry| {
            let mut name = [0; 8];
            name.copy_from_slice(&entry[..8]);
            let field = |offset: usize| {
                u32::from_le_bytes([
                    entry[offset],
                    entry[offset + 1],
                    entry[offset + 2],
                    entry[offset + 3],
                ])
            };
            SectionHeader {
                name,
                virtual_size: field(SECTION_VIRTUAL_SIZE),
                virtual_address: field(SECTION_VIRTUAL_ADDRESS),
                size_of_raw_data: field(SECTION_SIZE_OF_RAW_DATA),
                pointer_to_raw_data: field(SECTION_POINTER_TO_RAW_DATA),
            }
        })
        .collect::<Vec<_>>();
    for section in &sections {
        if section.file_range().end > pe.len() {
            return Err(malformed(format!(
                "section `{}` claims bytes {:#x}..{:#x}, past the end of the file ({:#x})",
                section.name(),
                section.file_range().start,
                section.file_range().end,
                pe.len()
            )));
        }
    }
    Ok(Headers {
        coff,
        optional,
        section_table,
        sections,
        file_alignment,
        section_alignment,
        size_of_headers,
        size_of_image,
        signed,
    })
}

/// The sections of a PE32+ x86-64 image, in section table order: each one's name and the
/// byte range of its data in the file.
///
/// The range covers the section's raw data including the zero padding up to
/// `FileAlignment` (so the ranges of all sections together cover every section byte);
/// a section's content is the first `VirtualSize` bytes of it. Meant for diagnostics,
/// such as naming the section in which two UKIs differ.
pub fn sections(pe: &[u8]) -> Result<Vec<(String, Range<usize>)>, UkiError> {
    Ok(parse(pe)?
        .sections
        .iter()
        .map(|section| (section.name(), section.file_range()))
        .collect())
}

/// The PE image checksum (the optional header's `CheckSum`), as `IMAGEHLP`'s
/// `CheckSumMappedFile` computes it: the 16-bit one's-complement-style sum of the file with
/// the checksum field taken as zero, plus the file's length.
fn pe_checksum(pe: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u32 = 0;
    for (index, word) in pe.chunks(2).enumerate() {
        let offset = index * 2;
        if (checksum_offset..checksum_offset + 4).contains(&offset) {
            continue;
        }
        let word = u16::from_le_bytes([word[0], word.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The length is at most 4 GiB, which `build_uki` has checked.
    sum.wrapping_add(pe.len() as u32)
}

/// The end of the file without a COFF symbol table (and its string table) that sits at the
/// very end after all section data, where old stubs have one; `None` to keep the file whole.
fn symbol_table_start(stub: &[u8], headers: &Headers) -> Result<Option<usize>, UkiError> {
    let coff = headers.coff;
    let pointer = read_u32(
        stub,
        coff + COFF_POINTER_TO_SYMBOL_TABLE,
        "PointerToSymbolTable",
    )?;
    let count = read_u32(stub, coff + COFF_NUMBER_OF_SYMBOLS, "NumberOfSymbols")?;
    if pointer == 0 {
        return Ok(None);
    }
    let start = pointer as usize;
    let symbols_end = start + SYMBOL_SIZE * count as usize;
    let end = match read_u32(stub, symbols_end, "the string table size") {
        Ok(strings) => symbols_end + strings as usize,
        Err(_) => symbols_end,
    };
    let section_end = headers
        .sections
        .iter()
        .map(|section| section.file_range().end)
        .max()
        .unwrap_or(0);
    Ok((end == stub.len() && start >= section_end).then_some(start))
}

/// Checks the boot protocol signatures of an x86 bzImage, to catch a swapped argument.
fn check_bzimage(linux: &[u8]) -> Result<(), UkiError> {
    if linux.starts_with(b"MZ") && linux.get(0x202..0x206) == Some(b"HdrS".as_slice()) {
        Ok(())
    } else {
        Err(UkiError::NotBzImage)
    }
}

/// Build the UKI: the stub's sections, then `.osrel`, `.cmdline`, `.initrd` and `.linux`
/// (ukify's order: the kernel last) at aligned addresses, the COFF `TimeDateStamp` set to
/// `timestamp`, `SizeOfImage`, `NumberOfSections`, `SizeOfInitializedData` and
/// `SizeOfCode` updated, and the optional header's `CheckSum` recomputed.
///
/// The stub's bytes are kept, except for a trailing COFF symbol table, which is dropped.
/// The result depends only on the arguments: pass `SOURCE_DATE_EPOCH` (or 0) as
/// `timestamp`, never the clock.
pub fn build_uki(stub: &[u8], parts: &UkiParts, timestamp: u32) -> Result<Vec<u8>, UkiError> {
    let headers = parse(stub)?;
    if headers.signed {
        return Err(UkiError::SignedStub);
    }
    check_bzimage(parts.linux)?;
    let read_only_data = CONTAINS_INITIALIZED_DATA | READABLE;
    let additions = [
        (".osrel", parts.osrel, read_only_data),
        (".cmdline", parts.cmdline, read_only_data),
        (".initrd", parts.initrd, read_only_data),
        // Code, as in ukify: kernels started through the EFI handover protocol run in place.
        (".linux", parts.linux, CONTAINS_CODE | READABLE),
    ]
    .into_iter()
    .filter(|(_, data, _)| !data.is_empty())
    .collect::<Vec<_>>();
    for (name, _, _) in &additions {
        if headers
            .sections
            .iter()
            .any(|section| section.name() == *name)
        {
            return Err(UkiError::SectionExists { name });
        }
    }

    // The firmware loads the first SizeOfHeaders bytes, and the stub finds its sections in
    // that copy, so the new entries must fit in it. Rounding SizeOfHeaders up to
    // FileAlignment is safe, as ukify notes, as long as no section's data or address
    // starts before the new end.
    let old_table_end = headers.section_table + headers.sections.len() * SECTION_HEADER_SIZE;
    let new_table_end = old_table_end + additions.len() * SECTION_HEADER_SIZE;
    let size_of_headers = if new_table_end > headers.size_of_headers as usize {
        align_up(u64::from(headers.size_of_headers), headers.file_alignment) as usize
    } else {
        headers.size_of_headers as usize
    };
    let first_section = headers
        .sections
        .iter()
        .flat_map(|section| {
            let data = (section.size_of_raw_data > 0).then_some(section.pointer_to_raw_data);
            [data, Some(section.virtual_address)]
        })
        .flatten()
        .map(|offset| offset as usize)
        .min()
        .unwrap_or(usize::MAX);
    let limit = size_of_headers.min(first_section);
    if new_table_end > limit || size_of_headers > first_section {
        return Err(UkiError::NoHeaderRoom {
            added: additions.len(),
            needed: new_table_end,
            limit,
        });
    }
    let header_space = stub.get(old_table_end..new_table_end).ok_or_else(|| {
        malformed(format!(
            "SizeOfHeaders ({:#x}) is past the end of the file",
            headers.size_of_headers
        ))
    })?;
    if let Some(used) = header_space.iter().position(|&byte| byte != 0) {
        return Err(UkiError::HeaderSpaceInUse {
            offset: old_table_end + used,
        });
    }

    let mut uki = match symbol_table_start(stub, &headers)? {
        Some(start) => {
            let mut uki = stub[..start].to_vec();
            let coff = headers.coff;
            write_u32(&mut uki, coff + COFF_POINTER_TO_SYMBOL_TABLE, 0);
            write_u32(&mut uki, coff + COFF_NUMBER_OF_SYMBOLS, 0);
            let characteristics = read_u16(&uki, coff + COFF_CHARACTERISTICS, "Characteristics")?;
            write_u16(
                &mut uki,
                coff + COFF_CHARACTERISTICS,
                characteristics | LOCAL_SYMBOLS_STRIPPED,
            );
            uki
        }
        None => stub.to_vec(),
    };

    let optional = headers.optional;
    let mut size_of_code = read_u32(stub, optional + OPTIONAL_SIZE_OF_CODE, "SizeOfCode")?;
    let mut size_of_initialized_data = read_u32(
        stub,
        optional + OPTIONAL_SIZE_OF_INITIALIZED_DATA,
        "SizeOfInitializedData",
    )?;
    // Start after everything the stub claims, by its sections or by its SizeOfImage.
    let image_end = headers
        .sections
        .iter()
        .map(|section| u64::from(section.virtual_address) + u64::from(section.virtual_size))
        .chain([u64::from(headers.size_of_image)])
        .max()
        .unwrap_or(0);
    let mut virtual_address = align_up(image_end, headers.section_alignment);
    for (index, (name, data, characteristics)) in additions.iter().enumerate() {
        let too_large = || UkiError::TooLarge { name };
        let pointer = align_up(uki.len() as u64, headers.file_alignment);
        let raw_size = align_up(data.len() as u64, headers.file_alignment);
        let end = pointer + raw_size;
        let virtual_end = virtual_address + data.len() as u64;
        if end > u64::from(u32::MAX) || virtual_end > u64::from(u32::MAX) {
            return Err(too_large());
        }
        uki.resize(pointer as usize, 0);
        uki.extend_from_slice(data);
        uki.resize(end as usize, 0);

        let mut entry = [0u8; SECTION_HEADER_SIZE];
        entry[..name.len()].copy_from_slice(name.as_bytes());
        write_u32(&mut entry, SECTION_VIRTUAL_SIZE, data.len() as u32);
        write_u32(&mut entry, SECTION_VIRTUAL_ADDRESS, virtual_address as u32);
        write_u32(&mut entry, SECTION_SIZE_OF_RAW_DATA, raw_size as u32);
        write_u32(&mut entry, SECTION_POINTER_TO_RAW_DATA, pointer as u32);
        write_u32(&mut entry, SECTION_CHARACTERISTICS, *characteristics);
        let offset = old_table_end + index * SECTION_HEADER_SIZE;
        uki[offset..offset + SECTION_HEADER_SIZE].copy_from_slice(&entry);

        let total = if characteristics & CONTAINS_CODE != 0 {
            &mut size_of_code
        } else {
            &mut size_of_initialized_data
        };
        *total = total.checked_add(raw_size as u32).ok_or_else(too_large)?;
        virtual_address = align_up(virtual_end, headers.section_alignment);
    }
    let size_of_image = u32::try_from(virtual_address).map_err(|_| UkiError::TooLarge {
        name: additions.last().map_or(".linux", |(name, _, _)| name),
    })?;

    let coff = headers.coff;
    // Fits: NumberOfSections was a u16 and at most 4 sections are added below SizeOfHeaders.
    let section_count = (headers.sections.len() + additions.len()) as u16;
    write_u16(&mut uki, coff + COFF_NUMBER_OF_SECTIONS, section_count);
    write_u32(&mut uki, coff + COFF_TIME_DATE_STAMP, timestamp);
    write_u32(&mut uki, optional + OPTIONAL_SIZE_OF_CODE, size_of_code);
    write_u32(
        &mut uki,
        optional + OPTIONAL_SIZE_OF_INITIALIZED_DATA,
        size_of_initialized_data,
    );
    write_u32(&mut uki, optional + OPTIONAL_SIZE_OF_IMAGE, size_of_image);
    write_u32(
        &mut uki,
        optional + OPTIONAL_SIZE_OF_HEADERS,
        size_of_headers as u32,
    );
    let checksum = pe_checksum(&uki, optional + OPTIONAL_CHECKSUM);
    write_u32(&mut uki, optional + OPTIONAL_CHECKSUM, checksum);
    Ok(uki)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Debian's systemd-stub (package systemd-boot-efi), the stub kiln builds UKIs from.
    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    /// The stub's sections, as `objdump -h` lists them for systemd-boot-efi 252.
    const STUB_SECTIONS: [&str; 8] = [
        ".text", ".reloc", ".data", ".dynamic", ".rela", ".dynsym", ".sbat", ".sdmagic",
    ];

    fn stub() -> Option<Vec<u8>> {
        match fs_err::read(STUB) {
            Ok(stub) => Some(stub),
            Err(error) => {
                eprintln!("skipping: {error} (install systemd-boot-efi)");
                None
            }
        }
    }

    /// A stand-in kernel: the bzImage signatures, then bytes that show up any misplacement.
    fn fake_linux() -> Vec<u8> {
        let mut linux = (0..5000u32)
            .map(|index| (index % 251) as u8)
            .collect::<Vec<_>>();
        linux[..2].copy_from_slice(b"MZ");
        linux[0x202..0x206].copy_from_slice(b"HdrS");
        linux
    }

    fn fake_initrd() -> Vec<u8> {
        (0..1234u32)
            .map(|index| (index * 7 % 253) as u8 | 1)
            .collect()
    }

    const OSREL: &[u8] = b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
    const CMDLINE: &[u8] = b"console=ttyS0 panic=-1";
    const TIMESTAMP: u32 = 0x6502_f1a3;

    fn build(stub: &[u8], linux: &[u8], initrd: &[u8]) -> Vec<u8> {
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: CMDLINE,
            linux,
            initrd,
        };
        build_uki(stub, &parts, TIMESTAMP).unwrap()
    }

    fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes(bytes[offset..offset + 2].try_into().unwrap())
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    /// Offset of the COFF header, read without `parse`.
    fn coff(pe: &[u8]) -> usize {
        u32_at(pe, 0x3c) as usize + 4
    }

    /// A second implementation of the PE checksum: the whole sum first, folded at the end.
    fn independent_checksum(pe: &[u8]) -> u32 {
        let field = coff(pe) + 20 + 64;
        let mut copy = pe.to_vec();
        copy[field..field + 4].fill(0);
        if copy.len() % 2 == 1 {
            copy.push(0);
        }
        let mut sum: u64 = copy
            .chunks_exact(2)
            .map(|word| u64::from(word[0]) | u64::from(word[1]) << 8)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u32 + pe.len() as u32
    }

    #[test]
    fn two_builds_are_identical() {
        let Some(stub) = stub() else { return };
        let (linux, initrd) = (fake_linux(), fake_initrd());
        let first = build(&stub, &linux, &initrd);
        assert_eq!(first, build(&stub, &linux, &initrd));
        // And the inputs matter: another command line gives other bytes.
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: b"console=ttyS1",
            linux: &linux,
            initrd: &initrd,
        };
        assert_ne!(first, build_uki(&stub, &parts, TIMESTAMP).unwrap());
    }

    #[test]
    fn time_date_stamp_is_the_given_timestamp() {
        let Some(stub) = stub() else { return };
        let uki = build(&stub, &fake_linux(), &fake_initrd());
        assert_eq!(u32_at(&uki, coff(&uki) + 4), TIMESTAMP);
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: CMDLINE,
            linux: &fake_linux(),
            initrd: &fake_initrd(),
        };
        let epoch = build_uki(&stub, &parts, 0).unwrap();
        assert_eq!(u32_at(&epoch, coff(&epoch) + 4), 0);
    }

    #[test]
    fn checksum_matches_the_linkers_and_an_independent_sum() {
        let Some(stub) = stub() else { return };
        let field = coff(&stub) + 20 + 64;
        // The linker filled in the stub's checksum: a known answer for `pe_checksum`.
        assert_ne!(u32_at(&stub, field), 0);
        assert_eq!(pe_checksum(&stub, field), u32_at(&stub, field));
        assert_eq!(independent_checksum(&stub), u32_at(&stub, field));

        let uki = build(&stub, &fake_linux(), &fake_initrd());
        assert_eq!(u32_at(&uki, field), independent_checksum(&uki));
        assert_ne!(u32_at(&uki, field), u32_at(&stub, field));
        // An odd length pads with a zero byte.
        let odd = [&uki[..], &[0x5a]].concat();
        assert_eq!(pe_checksum(&odd, field), independent_checksum(&odd));
    }

    #[test]
    fn sections_lists_the_stubs_then_the_parts_with_their_contents() {
        let Some(stub) = stub() else { return };
        let (linux, initrd) = (fake_linux(), fake_initrd());
        let uki = build(&stub, &linux, &initrd);
        let stub_sections = sections(&stub).unwrap();
        let uki_sections = sections(&uki).unwrap();
        let names = uki_sections
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>();
        let mut expected = STUB_SECTIONS.to_vec();
        expected.extend([".osrel", ".cmdline", ".initrd", ".linux"]);
        assert_eq!(names, expected);

        // The stub's sections are where they were, with the same bytes.
        assert_eq!(&uki_sections[..8], &stub_sections[..]);
        for (_, range) in &stub_sections {
            assert_eq!(uki[range.clone()], stub[range.clone()]);
        }
        let contents: [&[u8]; 4] = [OSREL, CMDLINE, &initrd, &linux];
        for ((name, range), content) in uki_sections[8..].iter().zip(contents) {
            assert_eq!(range.start % 0x200, 0, "{name} starts unaligned");
            assert_eq!(range.len(), content.len().div_ceil(0x200) * 0x200, "{name}");
            assert_eq!(
                &uki[range.start..range.start + content.len()],
                content,
                "{name}"
            );
            assert!(
                uki[range.start + content.len()..range.end]
                    .iter()
                    .all(|&byte| byte == 0),
                "{name} is not padded with zeros"
            );
        }
        assert_eq!(uki_sections.last().unwrap().1.end, uki.len());
    }

    #[test]
    fn headers_describe_the_added_sections() {
        let Some(stub) = stub() else { return };
        let (linux, initrd) = (fake_linux(), fake_initrd());
        let uki = build(&stub, &linux, &initrd);
        let coff = coff(&uki);
        let optional = coff + 20;
        assert_eq!(u16_at(&uki, coff + 2), 12);
        // The trailing symbol table is gone, and the flag says so.
        assert_eq!(u32_at(&stub, coff + 8), 0x11400, "the stub has changed");
        assert_eq!(u32_at(&uki, coff + 8), 0);
        assert_eq!(u32_at(&uki, coff + 12), 0);
        assert_eq!(u16_at(&uki, coff + 18), u16_at(&stub, coff + 18) | 0x0008);
        // Everything but the patched header fields and new section headers is the stub's.
        assert_eq!(uki[0x2c8 + 4 * 40..0x11400], stub[0x2c8 + 4 * 40..0x11400]);

        let table = optional + usize::from(u16_at(&uki, coff + 16));
        let entry = |index: usize| table + index * 40;
        let section_alignment = u32_at(&uki, optional + 32);
        let mut previous_end = u32_at(&stub, optional + 56);
        let sizes = [OSREL.len(), CMDLINE.len(), initrd.len(), linux.len()];
        for (index, size) in (8..12).zip(sizes) {
            let virtual_address = u32_at(&uki, entry(index) + 12);
            assert_eq!(u32_at(&uki, entry(index) + 8), size as u32);
            assert_eq!(virtual_address % section_alignment, 0);
            assert!(virtual_address >= previous_end);
            previous_end = virtual_address + size as u32;
        }
        assert_eq!(u32_at(&uki, entry(8) + 36), 0x4000_0040);
        assert_eq!(u32_at(&uki, entry(11) + 36), 0x4000_0020);
        assert_eq!(
            u32_at(&uki, optional + 56),
            previous_end.div_ceil(section_alignment) * section_alignment
        );
        let data_sizes = [OSREL.len(), CMDLINE.len(), initrd.len()]
            .iter()
            .map(|size| size.div_ceil(0x200) as u32 * 0x200)
            .sum::<u32>();
        assert_eq!(
            u32_at(&uki, optional + 8),
            u32_at(&stub, optional + 8) + data_sizes
        );
        assert_eq!(
            u32_at(&uki, optional + 4),
            u32_at(&stub, optional + 4) + linux.len().div_ceil(0x200) as u32 * 0x200
        );
    }

    #[test]
    fn objdump_lists_the_sections_in_address_order_with_their_sizes() {
        let Some(stub) = stub() else { return };
        let (linux, initrd) = (fake_linux(), fake_initrd());
        let uki = build(&stub, &linux, &initrd);
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("uki.efi");
        fs_err::write(&path, &uki).unwrap();
        let output = Command::new("objdump")
            .arg("-h")
            .arg(&path)
            .output()
            .expect("objdump (binutils) runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "objdump -h failed: {output:?}");
        assert!(stdout.contains("file format pei-x86-64"), "{stdout}");
        // Lines like `  8 .osrel  00000036  0000000000019300  0000000000019300  00011400  2**2`.
        let listed = stdout
            .lines()
            .filter_map(|line| {
                let fields = line.split_whitespace().collect::<Vec<_>>();
                fields[..].first()?.parse::<usize>().ok()?;
                let size = u64::from_str_radix(fields.get(2)?, 16).ok()?;
                let address = u64::from_str_radix(fields.get(3)?, 16).ok()?;
                Some((fields[1].to_string(), size, address))
            })
            .collect::<Vec<_>>();
        let names = listed
            .iter()
            .map(|(name, _, _)| name.as_str())
            .collect::<Vec<_>>();
        let mut expected = STUB_SECTIONS.to_vec();
        expected.extend([".osrel", ".cmdline", ".initrd", ".linux"]);
        assert_eq!(names, expected, "{stdout}");
        let sizes = listed[8..]
            .iter()
            .map(|(_, size, _)| *size)
            .collect::<Vec<_>>();
        let lengths = [OSREL.len(), CMDLINE.len(), initrd.len(), linux.len()];
        assert_eq!(sizes, lengths.map(|length| length as u64), "{stdout}");
        for pair in listed.windows(2) {
            let ((_, size, address), (name, _, next)) = (&pair[0], &pair[1]);
            assert!(
                address + size <= *next,
                "{name} overlaps its predecessor:\n{stdout}"
            );
        }
        // After the stub's SizeOfImage (0x19300, not a multiple of its 0x200 alignment).
        assert_eq!(listed[8].2, 0x19400, "{stdout}");
    }

    #[test]
    fn empty_parts_are_left_out() {
        let Some(stub) = stub() else { return };
        let linux = fake_linux();
        let parts = UkiParts {
            osrel: b"",
            cmdline: CMDLINE,
            linux: &linux,
            initrd: b"",
        };
        let uki = build_uki(&stub, &parts, TIMESTAMP).unwrap();
        let names = sections(&uki)
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .skip(8)
            .collect::<Vec<_>>();
        assert_eq!(names, [".cmdline", ".linux"]);
    }

    #[test]
    fn non_pe_input_is_refused() {
        let error = sections(b"#!/bin/sh\necho not an EFI binary\n").unwrap_err();
        assert!(matches!(error, UkiError::Malformed { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "not a PE image: no DOS header (`MZ`) at the start"
        );

        let linux = fake_linux();
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: CMDLINE,
            linux: &linux,
            initrd: b"",
        };
        let mut dos_only = vec![0u8; 0x80];
        dos_only[..2].copy_from_slice(b"MZ");
        dos_only[0x3c] = 0x40;
        let error = build_uki(&dos_only, &parts, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "not a PE image: no PE signature at 0x40, where e_lfanew points"
        );
        let Some(stub) = stub() else { return };
        let error = build_uki(&stub[..0x2c0], &parts, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "not a PE image: the section table (8 entries at 0x188) is cut off"
        );
        let error = build_uki(&stub[..0x1000], &parts, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "not a PE image: section `.text` claims bytes 0x400..0xc400, past the end of the \
             file (0x1000)"
        );
    }

    #[test]
    fn other_architectures_and_pe32_are_refused() {
        let Some(stub) = stub() else { return };
        let coff = coff(&stub);
        let mut arm = stub.clone();
        arm[coff..coff + 2].copy_from_slice(&0xaa64u16.to_le_bytes());
        let error = sections(&arm).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the PE image is for machine 0xaa64, not x86-64 (0x8664)"
        );
        let mut pe32 = stub.clone();
        pe32[coff + 20..coff + 22].copy_from_slice(&0x10bu16.to_le_bytes());
        let error = sections(&pe32).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the PE image has optional header magic 0x10b, not PE32+ (0x20b)"
        );
    }

    #[test]
    fn a_stub_that_has_a_section_already_is_refused() {
        let Some(stub) = stub() else { return };
        let mut stub = stub;
        let sdmagic = stub
            .windows(8)
            .position(|window| window == b".sdmagic")
            .unwrap();
        stub[sdmagic..sdmagic + 8].copy_from_slice(b".cmdline");
        let linux = fake_linux();
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: CMDLINE,
            linux: &linux,
            initrd: b"",
        };
        let error = build_uki(&stub, &parts, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the stub already has a `.cmdline` section"
        );
    }

    #[test]
    fn a_stub_without_header_room_is_refused() {
        let Some(stub) = stub() else { return };
        let linux = fake_linux();
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: CMDLINE,
            linux: &linux,
            initrd: b"",
        };
        // Something other than padding right after the section table.
        let mut crowded = stub.clone();
        crowded[0x2c8 + 50] = 0xcc;
        let error = build_uki(&crowded, &parts, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the stub has non-zero bytes at 0x2fa, where new section headers would go"
        );
        // The first section's data right after the section table.
        let mut tight = stub.clone();
        let text = 0x188;
        tight[text + 20..text + 24].copy_from_slice(&0x2c8u32.to_le_bytes());
        let error = build_uki(&tight, &parts, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no room for 3 more section headers in the stub: the section table would end at \
             0x340, but the headers must end by 0x2c8"
        );
    }

    #[test]
    fn a_signed_stub_is_refused() {
        let Some(stub) = stub() else { return };
        let mut signed = stub;
        let security = coff(&signed) + 20 + 112 + 4 * 8;
        signed[security..security + 8].copy_from_slice(&[0, 0x40, 0x01, 0, 0x10, 0, 0, 0]);
        let linux = fake_linux();
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: CMDLINE,
            linux: &linux,
            initrd: b"",
        };
        assert!(matches!(
            build_uki(&signed, &parts, 0),
            Err(UkiError::SignedStub)
        ));
    }

    #[test]
    fn swapped_kernel_and_initrd_are_refused() {
        let Some(stub) = stub() else { return };
        let (linux, initrd) = (fake_linux(), fake_initrd());
        let parts = UkiParts {
            osrel: OSREL,
            cmdline: CMDLINE,
            linux: &initrd,
            initrd: &linux,
        };
        assert!(matches!(
            build_uki(&stub, &parts, 0),
            Err(UkiError::NotBzImage)
        ));
    }
}
