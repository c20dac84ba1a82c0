"""What a run writes about a study: the lesion report (report), the DICOM SEG (seg), the pictures (figures),
the review page (review_page, review_assets), and the outputs table with results.json (outputs). Imports
model/ and studies/ only."""
