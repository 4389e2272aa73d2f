using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class StageProgressTimeAndTransientFailures : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "progress_at",
                table: "stages",
                type: "timestamp with time zone",
                nullable: true);

            migrationBuilder.AddColumn<bool>(
                name: "transient",
                table: "stage_attempts",
                type: "boolean",
                nullable: true);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "progress_at",
                table: "stages");

            migrationBuilder.DropColumn(
                name: "transient",
                table: "stage_attempts");
        }
    }
}
