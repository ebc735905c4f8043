"""Bookable resources (meeting rooms, desk day passes): time slots with seats, booked by members with credits."""
